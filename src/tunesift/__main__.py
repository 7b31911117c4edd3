import sys

from tunesift.cli import main

sys.exit(main())
