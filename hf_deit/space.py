"""`hf-deit space MODEL OUT_DIR`: a folder that runs the demo page (hf_deit/app.py) as a Hugging Face Space.

    hf-deit space runs/deit_cifar10 spaces/deit-cifar10 --examples photos/ --space-id you/deit-cifar10
    cd spaces/deit-cifar10 && python app.py                     # the Space, run here
    hf upload --repo-type space you/deit-cifar10 spaces/deit-cifar10 .

The folder holds README.md (the Space's front matter: gradio SDK, app file, the model it shows), app.py (a verbatim
copy of hf_deit/app.py: it imports no hf_deit, the model loads with its own saved code), app_config.json (what
app.py shows), requirements.txt, the model itself when MODEL is a local folder (model/) and the example images
(examples/). A local model's card gets a "Demo" section linking the Space; a Hub model's page lists the Space by
itself, from the front matter's `models:`.
"""

from __future__ import annotations

import json
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import app

# The gradio release the page was tested with; written into README.md's sdk_version when gradio is not installed.
TESTED_GRADIO = "6.31.0"
MODEL_DIR, EXAMPLES_DIR = "model", "examples"
DEMO_MARKER = "<!-- hf_deit space -->"  # the model card's "Demo" section, replaced when written again
# What loading needs from a saved folder: weights (one file or shards + index), config, image processor, model code.
MODEL_FILES = ("config.json", "preprocessor_config.json", "*.safetensors", "model.safetensors.index.json", "*.py")


def _space_readme(title: str, model: str, hub_model: bool, gradio_version: str) -> str:
    front = [
        "---",
        f"title: {json.dumps(title)}",
        "emoji: ⚗️",
        "colorFrom: indigo",
        "colorTo: green",
        "sdk: gradio",
        f"sdk_version: {gradio_version}",
        "app_file: app.py",
        "pinned: false",
        "license: apache-2.0",
        "short_description: A distilled DeiT's two heads and two tokens on your image",
        *([f"models:\n- {model}"] if hub_model else []),
        "---",
    ]
    source = f"[{model}](https://huggingface.co/{model})" if hub_model else "the model in `model/`"
    body = (
        f"# {title}\n\nThe demo page of {source}, a DeiT with a distillation token (hf_deit). Drop an image: the "
        "top-5 of the fused, cls and distillation heads, where they disagree, and what the cls and the distillation "
        "token attend to (last block and attention rollout).\n\nRun it locally: `pip install -r requirements.txt "
        "gradio` then `python app.py`. Written by `hf-deit space`; app.py is hf_deit's `hf_deit/app.py`.\n"
    )
    return "\n".join(front) + "\n\n" + body


def _requirements() -> str:
    import transformers

    # The model's saved code was written against this transformers major version; gradio comes from sdk_version.
    major = int(transformers.__version__.split(".")[0])
    return (
        "# What app.py and the model's saved code import; the Space's gradio comes from README.md's sdk_version.\n"
        f"torch\ntransformers>={transformers.__version__},<{major + 1}\nnumpy\nPillow\n"
    )


def _copy_model(model_dir: Path, target: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    if "AutoModelForImageClassification" not in config.get("auto_map", {}):
        raise ValueError(
            f"{model_dir} carries no model code (config.json has no auto_map), so it cannot load where hf_deit is "
            "not installed: save it again with a current hf_deit (DeiTForImageClassification.from_pretrained(dir)"
            ".save_pretrained(dir))"
        )
    target.mkdir(parents=True, exist_ok=True)
    for pattern in MODEL_FILES:
        for path in model_dir.glob(pattern):
            shutil.copy2(path, target / path.name)


def link_space_from_model_card(model_dir: Path, output_dir: Path, space_id: str | None) -> bool:
    """Add (or replace) a "Demo" section at the end of `model_dir`/README.md; False when there is no card."""
    card = model_dir / "README.md"
    if not card.is_file():
        return False
    text = card.read_text().split(DEMO_MARKER)[0].rstrip()
    if space_id:
        where = f"[huggingface.co/spaces/{space_id}](https://huggingface.co/spaces/{space_id})"
    else:
        where = f"a Space folder written by `hf-deit space` (`{output_dir.name}/`: `python app.py` there runs it)"
    section = (
        f"\n\n{DEMO_MARKER}\n## Demo\n\nTry the model on your own images: {where}. It shows the top-5 of the fused, "
        "cls and distillation heads, where they disagree, and what the two tokens attend to.\n"
    )
    card.write_text(text + section)
    return True


def write_space(
    model: str,
    output_dir: str | Path,
    *,
    examples: str | None = None,
    space_id: str | None = None,
    title: str | None = None,
) -> dict[str, Path]:
    """Write the Space folder (see the module docstring); returns the paths written, by role."""
    out = Path(output_dir)
    model_dir = Path(model).expanduser()
    local = model_dir.is_dir()
    if not local and (model.startswith((".", "/", "~")) or model.count("/") > 1):
        raise FileNotFoundError(f"model folder not found: {model}")
    if local and not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model} is not a saved model folder (it has no config.json)")
    example_files = app.image_files(examples)  # checked before anything is written
    out.mkdir(parents=True, exist_ok=True)
    paths = {"app": out / "app.py", "config": out / app.APP_CONFIG, "readme": out / "README.md",
             "requirements": out / "requirements.txt"}  # fmt: skip
    shutil.copyfile(app.__file__, paths["app"])
    if local:
        _copy_model(model_dir, out / MODEL_DIR)
        paths["model"] = out / MODEL_DIR
    if example_files:
        (out / EXAMPLES_DIR).mkdir(exist_ok=True)
        for path in example_files:
            shutil.copy2(path, out / EXAMPLES_DIR / Path(path).name)
        paths["examples"] = out / EXAMPLES_DIR
    title = title or f"DeiT demo: {model_dir.name if local else model.split('/')[-1]}"
    settings = {"model": MODEL_DIR if local else model, "title": title}
    if example_files:
        settings["examples"] = EXAMPLES_DIR
    paths["config"].write_text(json.dumps(settings, indent=1) + "\n")
    try:
        gradio_version = version("gradio")
    except PackageNotFoundError:
        gradio_version = TESTED_GRADIO
    paths["readme"].write_text(_space_readme(title, model, not local, gradio_version))
    paths["requirements"].write_text(_requirements())
    if local and link_space_from_model_card(model_dir, out, space_id):
        paths["model_card"] = model_dir / "README.md"
    return paths


__all__ = ["write_space", "link_space_from_model_card"]
