"""Support for the browser tests: Chromium via Playwright, and the npm test page sources."""
