//! nightcrier: AI-powered incident triage for Kubernetes fleets.
