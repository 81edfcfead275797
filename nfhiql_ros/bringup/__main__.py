import sys

from nfhiql_ros.bringup.cli import main

sys.exit(main())
