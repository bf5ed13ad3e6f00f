import sys

from streamemo.cli import main

sys.exit(main())
