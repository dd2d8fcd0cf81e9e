"""One trial, no Optuna: setup (data + teacher), the teacher, compress, fine-tune, the workbench."""
