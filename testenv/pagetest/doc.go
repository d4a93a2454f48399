// Package pagetest renders the status page (GET / on HTTP_LISTEN) of the
// real file-destination binary, fed through Mosquitto, in a real headless
// browser: Debian's Chromium, installed by `make setup` (scripts/setup.sh
// chromium). It checks that the chart, the numbers and a dead letter's
// reason are in the rendered document, that the screenshot shows the
// chart's two lines in their colours (the inline style sheet passed the
// Content-Security-Policy), and that the browser refused nothing.
//
// It only has tests; make test runs them (./testenv/...).
package pagetest
