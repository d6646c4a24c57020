"""What a reader sees: tables, figures, the "What this shows" sentences, README and REPORT.md."""
