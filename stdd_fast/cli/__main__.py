import sys

from stdd_fast.cli import main

sys.exit(main())
