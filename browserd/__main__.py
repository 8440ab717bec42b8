import sys

from browserd.cli import main

sys.exit(main())
