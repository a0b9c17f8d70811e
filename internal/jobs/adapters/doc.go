// Package adapters plugs the real marketplace client, decrypt pipeline and
// Klipper bridge into the job engine's ports (jobs.Marketplace,
// jobs.Decryptor, jobs.Printer, jobs.FitCheck). The ports and their types
// stay in package jobs, which imports none of the parts; the daemon wires
// these adapters, and the engine's acceptance tests run the very same ones.
package adapters
