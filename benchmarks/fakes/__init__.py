"""Small servers speaking third-party protocols on loopback, used instead of patching clients.

Each fake is an ``async with run_x()`` context manager that binds ``127.0.0.1:0`` and reports
the address it got; ``benchmarks.fakes.openai_server`` also runs as a separate process for
end-to-end tests. Import from the submodules (importing them here would make
``python -m benchmarks.fakes.openai_server`` load its module twice).
"""
