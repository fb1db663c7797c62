"""nitrotls.server (see docs/architecture.md).

The hot-path modules may run compiled (mypyc); :mod:`nitrotls.server.native` decides here,
before any of them is imported, and never lets a build older than its sources run.
"""

from nitrotls.server.native import activate

ENGINE = activate()
