"""Adapters for fine-tuning pretrained encoders on another rig with few trainable parameters.

The methods of fine-tuning are one table, `METHODS` (name -> how it adapts a detector, its default
targets, the adapter modules its export recipe holds); `AdapterSpec` is a fine-tune config's
adapter part and `apply_method` applies it. A detector with adapters is an `AdaptedDetector`: its
forward conditions rig-conditioned FiLM on the batch's own rig vectors; `load_finetuned` and
`build_adapted` rebuild one from a fine-tuning run's files.

The tools underneath work on any `torch.nn.Module`, addressing its parts by module name (globs, or
``re:`` regexes):

- LoRA on Linear/Conv layers: `apply_lora`, `merge_lora`;
- bottleneck residual adapters after named stages: `insert_adapters`;
- rig-conditioned FiLM after named stages: `insert_film`, `film_condition`, `RigEmbedding`;
- normalization for the target domain: `reestimate_batchnorm`, `convert_domain_norms`, `set_domain`;
- freezing policies and parameter counts: `apply_freezing`, `count_parameters`;
- export of the adapter tensors alone: `save_adapters`, `load_adapters`.

All of them start from the pretrained model's behaviour (zero-initialized updates), and keep the
pretrained tensors' state-dict keys recoverable (`base_key`), so `arch_signature` is the same
before and after adapting. See docs/adapters.md.
"""

from drivetl.calib.rig_vector import RIG_FIELD_DOCS, RIG_FIELDS, describe_rig
from drivetl.models._keys import arch_signature, base_key, is_adapter_key, match_modules

from ._bottleneck import BottleneckAdapter, StageWithAdapter, infer_out_channels, insert_adapters
from ._detector import AdaptedDetector, adapted_forward, build_adapted, build_detector, load_finetuned
from ._export import adapter_recipe, apply_recipe, load_adapters, read_adapter_metadata, save_adapters
from ._film import FiLM, RigEmbedding, StageWithFiLM, film_condition, insert_film
from ._freeze import (
    POLICIES,
    ParameterCount,
    apply_freezing,
    count_parameters,
    frozen_norms_eval,
    parameter_table,
)
from ._lora import LoRAConv1d, LoRAConv2d, LoRAConv3d, LoRALinear, apply_lora, merge_lora
from ._methods import (
    METHODS,
    AdapterSpec,
    Method,
    apply_method,
    default_targets,
    freeze_model,
    stage_names,
)
from ._norm import DomainBatchNorm, convert_domain_norms, reestimate_batchnorm, set_domain

__all__ = [
    "METHODS",
    "POLICIES",
    "RIG_FIELDS",
    "RIG_FIELD_DOCS",
    "AdaptedDetector",
    "AdapterSpec",
    "BottleneckAdapter",
    "DomainBatchNorm",
    "FiLM",
    "LoRAConv1d",
    "LoRAConv2d",
    "LoRAConv3d",
    "LoRALinear",
    "Method",
    "ParameterCount",
    "RigEmbedding",
    "StageWithAdapter",
    "StageWithFiLM",
    "adapted_forward",
    "adapter_recipe",
    "apply_freezing",
    "apply_lora",
    "apply_method",
    "apply_recipe",
    "arch_signature",
    "base_key",
    "build_adapted",
    "build_detector",
    "convert_domain_norms",
    "count_parameters",
    "default_targets",
    "describe_rig",
    "film_condition",
    "freeze_model",
    "frozen_norms_eval",
    "infer_out_channels",
    "insert_adapters",
    "insert_film",
    "is_adapter_key",
    "load_adapters",
    "load_finetuned",
    "match_modules",
    "merge_lora",
    "parameter_table",
    "read_adapter_metadata",
    "reestimate_batchnorm",
    "save_adapters",
    "set_domain",
    "stage_names",
]
