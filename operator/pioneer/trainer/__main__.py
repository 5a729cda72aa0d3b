import sys

from pioneer.trainer.run import main

sys.exit(main())
