// Package faults proves the delivery and safety promises of every
// destination under faults, bad input and load, against the real binaries,
// a real Mosquitto and the cloud emulators: SIGKILL mid-stream, torn and
// corrupted spools, cloud outages and network black holes, a full disk,
// hostile payloads and settings, secrets in logs, and a compressed soak.
//
// The suite is in the package's tests (`make test-faults`); it prints a
// summary table (scenario, target, published, delivered, duplicates, lost)
// at the end and fails on any lost message. Sizes come from FAULTS_MESSAGES,
// FAULTS_KILLS and FAULTS_OUTAGE (the full sizes by default);
// FAULTS_SOAK=1 runs the ten-minute soak instead of the two-minute one
// (FAULTS_SOAK_TIME sets another), FAULTS_RATE the crash stream's rate, and
// FAULTS_TARGETS=file,aws-s3,... limits the run to some targets and
// FAULTS_SCENARIOS=crash,powercut,disk,badinput,config,outage,security,soak
// to some scenarios (`make test` runs a reduced file-destination subset).
package faults
