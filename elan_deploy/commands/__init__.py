"""CLI subcommand implementations (imported lazily so `elan-deploy --help` stays fast)."""
