"""`python -m msaas.cli`, the same as the `msaas` command."""

import sys

from msaas.cli import main

sys.exit(main())
