"""transformers' own model test battery (`ModelTesterMixin`, `ConfigTester`) run against hf_deit.

Adapted from transformers' tests/models/deit/test_modeling_deit.py, the way a new model's tests are written: a
`ModelTester` with a tiny config, the mixins, and overrides only where our model differs (no masked-image-modeling
head; `DeiTForImageClassificationWithTeacher` is our `DeiTForImageClassification` with `use_distillation_token`).
The mixins come from the transformers sdist of the installed version (tests/transformers_common/README.md). Without
network access the whole file is skipped with the reason; with CI=true that fails instead.

Skipped tests and their reasons (transformers 5.24 on a CPU-only machine; `pytest -rs` prints each):
  skipped here, as in transformers' DeiT test:
    test_inputs_embeds: DeiT takes pixel values, not embeddings.
    test_multi_gpu_data_parallel_forward: transformers skips it for DeiT (a CUDA issue); needs two GPUs anyway.
    test_resize_tokens_embeddings, test_resize_embeddings_untied(_no_reinit_on_post_init): no token vocabulary
      (test_resize_embeddings = False).
  skipped by the mixin because the architecture lacks the feature:
    test_inputs_embeds_matches_input_ids (no inputs_embeds); test_resize_position_vector_embeddings (no
    resize_position_embeddings hook of that name: ours is `resize_position_embeddings(image_size)`, tested in
    test_modeling.py); test_causal_lm_loss_honors_shift_labels, test_encoder_decoder_loss_no_double_shift (no
    language-model head); test_enable_input_require_grads_with_gradient_checkpointing (input embeddings are a
    convolution without `.weight` on the returned module, as in transformers' ViT/DeiT); test_sliding_window_mask;
    test_model_rope_* and test_vision_axial_rope (no RoPE); test_moe_models_record_router_logits,
    test_output_router_logits_from_config, test_eager_matches_batched_and_grouped_inference_* (no experts);
    test_attn_implementation_composite_models, test_can_set_attention_dynamically_composite_model,
    test_sdpa_can_dispatch_composite_models, test_internal_model_config_and_subconfig_are_same (not a composite
    model); test_tp_plan_matches_params (no tensor-parallel plan); the two conversion-mapping tests (no legacy
    checkpoint key renames: saved keys are the module names); the `_keep_in_fp32_modules` tests (none needed);
    the `capture_outputs` tests (hidden states and attentions are collected in forward, not by output hooks);
    tests of models that take a cache.
  skipped for this machine or missing optional packages: everything needing an accelerator, several of them,
    MPS, Flash Attention 2/3/4, the `kernels` library, deepspeed, and the `@slow` test_torch_compile_for_training.
  not run: transformers' export tests (`ExportTesterMixin`, not in the sdist): `test_torch_export` below instead.
  reduced: test_eager_matches_sdpa_inference runs 5 of transformers' 25 variants (see the override).
Plain DeiT (cls token only) is not run through the battery, to keep its time small; test_modeling.py covers it.
"""

import os
import unittest

import pytest
import torch

from hf_deit import DeiTConfig, DeiTForImageClassification, DeiTModel

from transformers_common.loader import BatteryUnavailable, load_battery

try:
    try:
        from parameterized import parameterized  # transformers' test files need it too (the `dev` extra has it)
    except ImportError as error:
        raise BatteryUnavailable(f"{error} (pip install -e '.[dev]')") from error
    test_modeling_common, test_configuration_common = load_battery()
except BatteryUnavailable as error:
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(f"CI=true: transformers' model test battery must run, but {error}") from error
    pytest.skip(f"transformers' common model tests are unavailable: {error}", allow_module_level=True)

ModelTesterMixin = test_modeling_common.ModelTesterMixin
_test_eager_matches_sdpa_inference = test_modeling_common._test_eager_matches_sdpa_inference
floats_tensor = test_modeling_common.floats_tensor
ids_tensor = test_modeling_common.ids_tensor
ConfigTester = test_configuration_common.ConfigTester


class DeiTModelTester:
    """transformers' DeiT tester values (30 px, width 32, 2 blocks, 4 heads, MLP 37), with 5 px patches and 4
    images instead of 2 px and 13 (38 tokens instead of 227) to keep the battery's time small on 2 CPU cores."""

    def __init__(self, parent, batch_size=4, image_size=30, patch_size=5, num_channels=3, hidden_size=32,
                 num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, num_labels=3,
                 use_distillation_token=True, is_training=True):  # fmt: skip
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.num_labels = num_labels
        self.use_distillation_token = use_distillation_token
        self.is_training = is_training
        # cls (+ distillation) token in front of the patches
        self.seq_length = (image_size // patch_size) ** 2 + (2 if use_distillation_token else 1)

    def get_config(self) -> DeiTConfig:
        return DeiTConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1,
            num_labels=self.num_labels,
            use_distillation_token=self.use_distillation_token,
            attn_implementation="eager",
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        labels = ids_tensor([self.batch_size], self.num_labels)
        return self.get_config(), pixel_values, labels

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, _ = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}

    def create_and_check_model(self, config, pixel_values, labels):
        model = DeiTModel(config).eval()
        result = model(pixel_values)
        self.parent.assertEqual(result.last_hidden_state.shape, (self.batch_size, self.seq_length, self.hidden_size))
        self.parent.assertEqual(result.pooler_output.shape, (self.batch_size, self.hidden_size))

    def create_and_check_for_image_classification(self, config, pixel_values, labels):
        model = DeiTForImageClassification(config).eval()
        result = model(pixel_values, labels=labels)
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.num_labels))
        self.parent.assertEqual(result.cls_logits.shape, (self.batch_size, self.num_labels))
        self.parent.assertTrue(torch.isfinite(result.loss))
        # greyscale images
        config.num_channels = 1
        model = DeiTForImageClassification(config).eval()
        pixel_values = floats_tensor([self.batch_size, 1, self.image_size, self.image_size])
        self.parent.assertEqual(model(pixel_values).logits.shape, (self.batch_size, self.num_labels))


class DeiTModelTest(ModelTesterMixin, unittest.TestCase):
    """transformers' common model tests on distilled DeiT (cls + distillation token, two heads)."""

    all_model_classes = (DeiTModel, DeiTForImageClassification)
    test_resize_embeddings = False
    use_distillation_token = True

    def setUp(self):
        self.model_tester = DeiTModelTester(self, use_distillation_token=self.use_distillation_token)
        # hidden_size 32 as transformers' DeiT test, with 4 heads: our config checks that the heads divide the width.
        self.config_tester = ConfigTester(
            self, config_class=DeiTConfig, has_text_modality=False, hidden_size=32, num_attention_heads=4
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    @unittest.skip(reason="DeiT does not use inputs_embeds")
    def test_inputs_embeds(self):
        pass

    @unittest.skip(reason="transformers' DeiT test skips it for a CUDA issue; it needs two GPUs anyway")
    def test_multi_gpu_data_parallel_forward(self):
        pass

    # transformers' 25 variants differ in padding side and attention mask, which a vision model without an attention
    # mask does not have (the variants run the same computation): one per dtype, and the output_attentions case.
    @parameterized.expand(
        [
            ("fp32", "fp32", "left", True, False, False),
            ("fp32_sdpa_kernels", "fp32", "left", True, False, True),
            ("fp16", "fp16", "left", True, False, False),
            ("bf16", "bf16", "left", True, False, False),
            ("fp32_output_attentions", "fp32", "left", True, True, False),
        ]
    )
    def test_eager_matches_sdpa_inference(self, name, dtype, padding_side, use_mask, output_attentions, kernels):
        _test_eager_matches_sdpa_inference(self, name, dtype, padding_side, use_mask, output_attentions, kernels)

    # parameterized.expand has already turned the mixin's method into 25 `test_eager_matches_sdpa_inference_NN_*`
    # methods; they are switched off below the class (unittest collects only callable attributes).

    def test_model_get_set_embeddings(self):
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), torch.nn.Module)
            output_embeddings = model.get_output_embeddings()
            self.assertTrue(output_embeddings is None or isinstance(output_embeddings, torch.nn.Linear))

    def test_model(self):
        self.model_tester.create_and_check_model(*self.model_tester.prepare_config_and_inputs())

    def test_for_image_classification(self):
        self.model_tester.create_and_check_for_image_classification(*self.model_tester.prepare_config_and_inputs())

    def test_problem_types(self):
        """transformers' DeiT test: each problem type gives a loss that backpropagates, with no broadcast warning."""
        import warnings

        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        problem_types = [
            ("multi_label_classification", 2, torch.float),
            ("single_label_classification", 1, torch.long),
            ("regression", 1, torch.float),
        ]
        for title, num_labels, dtype in problem_types:
            with self.subTest(problem_type=title):
                config.problem_type, config.num_labels = title, num_labels
                model = DeiTForImageClassification(config).train()
                inputs = self._prepare_for_class(inputs_dict, DeiTForImageClassification, return_labels=True)
                if num_labels > 1:
                    inputs["labels"] = inputs["labels"].unsqueeze(1).repeat(1, num_labels)
                inputs["labels"] = inputs["labels"].to(dtype)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    loss = model(**inputs).loss
                for w in caught:
                    assert "target size that is different to the input size" not in str(w.message), w.message
                loss.backward()

    def test_torch_export(self):
        """transformers' export tests are not in the sdist: torch.export the classifier and compare with eager."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        config._attn_implementation = "sdpa"
        model = DeiTForImageClassification(config).eval()
        exported = torch.export.export(model, args=(), kwargs={"pixel_values": inputs_dict["pixel_values"]})
        with torch.no_grad():
            expected = model(**inputs_dict).logits
            got = exported.module()(**inputs_dict).logits
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


for _name in [name for name in dir(ModelTesterMixin) if name.startswith("test_eager_matches_sdpa_inference_")]:
    setattr(DeiTModelTest, _name, None)
