import sys

from xmlbench.cli import main

sys.exit(main())
