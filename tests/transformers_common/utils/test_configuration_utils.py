"""Stand-in for transformers' tests/utils/test_configuration_utils.py (not in the sdist).

`config_common_kwargs`: a non-default value for common `PreTrainedConfig` arguments; `ConfigTester` builds a config
from them and checks each one is stored as given.
"""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["DeiTModel"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}
