"""Inter-process plumbing of one hub host: shared-memory rings and their messages."""
