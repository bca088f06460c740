"""`python -m sandbox.mailorder`: run the mail-order pharmacy simulator."""

import sys

from sandbox.mailorder.app import main

sys.exit(main())
