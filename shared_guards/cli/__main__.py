import sys

from shared_guards.cli import main

sys.exit(main())
