from taskhead.cli import main

raise SystemExit(main())
