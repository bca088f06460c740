"""Cross-cutting helpers with no Django models: used by product apps and by `sandbox/` alike."""
