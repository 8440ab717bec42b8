"""The control process: Control API, scheduler, node directory and task lifecycle."""
