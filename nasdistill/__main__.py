import sys

from nasdistill.cli import main

sys.exit(main())
