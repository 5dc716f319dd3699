"""Training: the distillation trainer and its arguments, the loss, the teacher (live, or cached by
`hf-deit cache-teacher`), checkpoint checks, speed paths and per-head metrics. Imports hf_deit.models, hf_deit.data
and hf_deit.hub (to render the model card); nothing here is imported by those three."""
