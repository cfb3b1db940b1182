"""Adapters for fine-tuning pretrained encoders on another rig with few trainable parameters.

Every tool here works on any `torch.nn.Module`, addressing its parts by module name (globs, or
``re:`` regexes):

- LoRA on Linear/Conv layers: `apply_lora`, `merge_lora`;
- bottleneck residual adapters after named stages: `insert_adapters`;
- rig-conditioned FiLM after named stages: `RigEmbedding`, `insert_film`, `film_condition`;
- normalization for the target domain: `reestimate_batchnorm`, `convert_domain_norms`, `set_domain`;
- freezing policies and parameter counts: `apply_freezing`, `count_parameters`;
- export of the adapter tensors alone: `save_adapters`, `load_adapters`.

All of them start from the pretrained model's behaviour (zero-initialized updates), and keep the
pretrained tensors' state-dict keys recoverable (`base_key`), so `arch_signature` is the same
before and after adapting. See docs/adapters.md.
"""

from ._bottleneck import BottleneckAdapter, StageWithAdapter, infer_out_channels, insert_adapters
from ._export import adapter_recipe, apply_recipe, load_adapters, read_adapter_metadata, save_adapters
from ._film import FiLM, StageWithFiLM, film_condition, insert_film
from ._freeze import (
    POLICIES,
    ParameterCount,
    apply_freezing,
    count_parameters,
    frozen_norms_eval,
    parameter_table,
)
from ._keys import arch_signature, base_key, is_adapter_key, match_modules
from ._lora import LoRAConv1d, LoRAConv2d, LoRAConv3d, LoRALinear, apply_lora, merge_lora
from ._norm import DomainBatchNorm, convert_domain_norms, reestimate_batchnorm, set_domain
from ._rig import RIG_FIELD_DOCS, RIG_FIELDS, RigEmbedding, describe_rig

__all__ = [
    "POLICIES",
    "RIG_FIELDS",
    "RIG_FIELD_DOCS",
    "BottleneckAdapter",
    "DomainBatchNorm",
    "FiLM",
    "LoRAConv1d",
    "LoRAConv2d",
    "LoRAConv3d",
    "LoRALinear",
    "ParameterCount",
    "RigEmbedding",
    "StageWithAdapter",
    "StageWithFiLM",
    "adapter_recipe",
    "apply_freezing",
    "apply_lora",
    "apply_recipe",
    "arch_signature",
    "base_key",
    "convert_domain_norms",
    "count_parameters",
    "describe_rig",
    "film_condition",
    "frozen_norms_eval",
    "infer_out_channels",
    "insert_adapters",
    "insert_film",
    "is_adapter_key",
    "load_adapters",
    "match_modules",
    "merge_lora",
    "parameter_table",
    "read_adapter_metadata",
    "reestimate_batchnorm",
    "save_adapters",
    "set_domain",
]
