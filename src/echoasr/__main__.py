import sys

from echoasr.cli import main

sys.exit(main())
