"""``sum``: adds the numbers of its JSON input; asks first when told to."""

from nodeagent.tools.asynctool import AsyncTool, ToolIO
from nodeagent.tools.base import ToolTask


class SumTool(AsyncTool):
    name = "sum"
    version = "1.2.0"
    input_schema = {
        "type": "object",
        "properties": {
            "numbers": {"type": "array", "items": {"type": "number"}, "maxItems": 1000},
            "label": {"type": "string", "maxLength": 40},
            "ask": {"type": "boolean"},
        },
        "required": ["numbers"],
        "additionalProperties": False,
    }

    async def run(self, task: ToolTask, io: ToolIO) -> int:
        numbers = task.input["numbers"]
        if task.input.get("ask"):
            io.write(f"Add {len(numbers)} numbers? [y/N] ")
            answer = await io.read()
            if not answer.strip().lower().startswith(b"y"):
                io.write("\r\nnot added\r\n")
                return 1
            io.write("\r\n")
        total = sum(numbers)
        io.write(f"{task.input.get('label', 'sum')}={total:g}\r\n")
        return 0 if total >= 0 else 3
