"""The sub-commands of the ``sycam`` CLI, one module each (``add(subparsers)`` + ``run(args)``)."""
