from assetlog.cli import main

raise SystemExit(main())
