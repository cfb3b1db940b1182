"""drivetl.workflows: multi-stage jobs built from every layer below.

- `evaluate` (`drivetl evaluate`): load checkpoints or adapter files, run them over fleet data
  through the sample pipeline, accumulate the metrics of `drivetl.eval`, write the report folder;
- `demo` (`drivetl demo`): simulate, pretrain, fine-tune adapters and from scratch, evaluate.

A workflow may import every other package of drivetl except `drivetl.commands` (which calls it);
nothing below imports a workflow. Importing this package imports none of its jobs.
"""
