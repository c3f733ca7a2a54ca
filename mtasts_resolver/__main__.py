from mtasts_resolver.cli import main

raise SystemExit(main())
