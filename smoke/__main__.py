import sys

from smoke.driver import main

sys.exit(main())
