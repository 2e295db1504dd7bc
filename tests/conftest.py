"""Shared pytest configuration: fixture plugins live in tests/fixtures/."""

pytest_plugins = ["tests.fixtures.archive", "tests.fixtures.workbench", "tests.fixtures.browser",
                  "tests.fixtures.quota"]
