//! Schema migrations of the nightcrier store.
