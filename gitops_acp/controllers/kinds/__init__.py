"""One module per kind, each with the same shape: a `<Kind>Controller` with `reconcile(name, ctx)`
running its steps in order, and `dependencies(obj)` naming what must wake it (controllers/base.py).
A new kind gets a module here and a line in `controllers.registry()`."""
