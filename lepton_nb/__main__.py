from lepton_nb.cli import main

raise SystemExit(main())
