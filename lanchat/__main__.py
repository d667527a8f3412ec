from __future__ import annotations

from lanchat.cli import main

raise SystemExit(main())
