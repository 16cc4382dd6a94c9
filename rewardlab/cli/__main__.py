from rewardlab.cli.entry import main

raise SystemExit(main())
