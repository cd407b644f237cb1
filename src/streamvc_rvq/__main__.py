import sys

from streamvc_rvq.cli import main

sys.exit(main())
