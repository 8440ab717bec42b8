"""The package build also builds the generated protobuf/gRPC code (cortex/v1), which is
not committed: ``pip install .`` from a fresh clone then gives working programs. The
settings are all in pyproject.toml; this file only adds that step to ``build_py``."""

import glob
import importlib.resources
import os

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install uses the tree, where `make proto` generates them
        from grpc_tools import protoc

        protos = sorted(glob.glob("proto/cortex/v1/*.proto"))
        if not protos:
            raise SystemExit("proto/cortex/v1/*.proto not found: cannot build cortex.v1")
        include = str(importlib.resources.files("grpc_tools") / "_proto")
        out = self.build_lib
        os.makedirs(os.path.join(out, "cortex", "v1"), exist_ok=True)
        code = protoc.main(["grpc_tools.protoc", "-Iproto", f"-I{include}",
                            f"--python_out={out}", f"--pyi_out={out}",
                            f"--grpc_python_out={out}", *protos])
        if code != 0:
            raise SystemExit(f"protoc failed with exit code {code}")
        open(os.path.join(out, "cortex", "v1", "__init__.py"), "a").close()


setup(cmdclass={"build_py": BuildPyWithProtos})
