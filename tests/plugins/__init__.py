"""Plugins of the kinds a user adds most, each one module, named in configs by import path.

``tests/test_plugins.py`` trains a config that refers to them only as
``plugins.<module>:<Class>`` (with ``tests/`` on ``sys.path``, as pytest puts it): a balancing
method, an architecture, a data format and a task kind, with no registration anywhere.
"""
