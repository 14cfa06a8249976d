from stdd_fast.bench.cli import main

raise SystemExit(main())
