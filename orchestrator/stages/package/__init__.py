"""Stage: the submission image as a folder, `orchestrator package --out DIR`.

DIR holds what a Docker image needs to answer a test file on a GPU machine with no network,
and nothing else:

  Dockerfile        FROM package.base_image, WORKDIR /app, CMD ["sh", "run.sh"]
  run.sh            answers INPUT into OUTPUT with `orchestrator infer`, then checks OUTPUT
  requirements.txt  exact versions of what the project runs on (the torch stack is the base
                    image's, or vllm's pin when a model is served with vLLM)
  wheels/           the project's own wheel and, unless --no-wheels, a wheel of every requirement
                    for package.python on x86_64 Linux: the Dockerfile installs from it with no index
  recipes/          the pipeline and role recipes, frozen: no extends, paths inside the image
  templates/        the prompts and LLaMA-Factory templates the recipes were trained with
  runs/, models/    the models the recipes serve: merged models, or a base and its adapters
                    (hard links where the file system allows, else copies)
  .dockerignore     keeps what a local try of run.sh writes (runs/infer, logs) out of the image
  MANIFEST          every file's sha256 (`sha256sum -c MANIFEST`) and the models' sizes

The GPU memory of serving is estimated first (core/serving/memory.py) and a package that would not fit
package.gpu_memory_gb is refused before anything is copied. Packaging again copies nothing
unchanged and removes what it wrote before that is no longer needed; a DIR without our
MANIFEST is refused.

The package, one job a module:

  run.py           package(): the checks, then DIR written from what the others give
  servers.py       what the image serves (as infer groups it: core/serving/grouping.py) and its GPU memory
  contents.py      the models' files, the frozen recipes, .dockerignore
  requirements.py  the pins (pip's own inspect report) and the wheels (pip's install report)
  folder.py        writing DIR: hard links or copies, unchanged files left, the MANIFEST
"""

from orchestrator.stages.package.requirements import WHEEL_PLATFORMS, download_wheels, pinned_requirements
from orchestrator.stages.package.run import package

__all__ = ["WHEEL_PLATFORMS", "download_wheels", "package", "pinned_requirements"]
