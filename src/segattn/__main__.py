from segattn.cli import main

raise SystemExit(main())
