"""Files in and out: checkpoints and their shape checks, export, rendered clips and plots,
run folders as the ``runs`` command reads them, and atomic writes."""
