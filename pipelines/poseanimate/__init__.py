"""PoseAnimate (IJCAI 2024): a character picture + a pose sequence -> an animation, zero-shot on SD1.5 +
an OpenPose ControlNet. Spec: shared/specs/flipsketch-poseanimate.md §2. pipeline.py composes the shared
diffusion core (ddim_invert, the one DDIM loop, adam_minimise, attention patches); attention.py is the
dual consistency / mask-guided attention; pata.py the pose alignment + transition; models.py the
SD1.5 + ControlNet bundle; settings.py the defaults the nodes use; testmodels.py the tiny stand-ins."""
from .models import SDControlNet, load_sdcn, tiny_sdcn
from .pata import align_poses, pata, transition
from .pipeline import PoseEmbeddings, decode, invert_source, optimise_embeddings, poseanimate_sample
from .settings import PACM, PATA, PoseAnimateAttention
from .testmodels import write_test_models

__all__ = ["PACM", "PATA", "PoseAnimateAttention", "PoseEmbeddings", "SDControlNet", "align_poses", "decode",
           "invert_source", "load_sdcn", "optimise_embeddings", "pata", "poseanimate_sample", "tiny_sdcn",
           "transition", "write_test_models"]
