"""A small MANO hand layer (numpy): shape blend shapes, pose blend shapes, linear blend skinning.

Reads the user's ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` (downloaded from the MANO website; they
cannot be redistributed). Those pickles were written by Python 2 and hold a few ``chumpy``
arrays; they are read here without chumpy (a stand-in class keeps the pickled array, see
``_ChumpyStandIn``) with an allow-list unpickler: a pickle that references any other class or
function (e.g. a ``__reduce__`` payload) is refused with an error naming the file and the class,
before anything runs. Keys used::

    v_template    (V, 3)       rest-pose vertices, metres (V = 778 for MANO)
    shapedirs     (V, 3, S)    shape blend shapes per unit of beta (S = 10)
    posedirs      (V, 3, P)    pose blend shapes per entry of (R_j - I), j >= 1 (P = 9 x 15)
    J_regressor   (J, V)       joints from vertices (scipy sparse or dense; J = 16)
    weights       (V, J)       skinning weights
    kintree_table (2, J)       row 0 = parent of each joint (root's parent is -1 / 2^32 - 1)
    f             (Fc, 3)      triangle vertex indices
    hands_mean    (3 (J - 1),) mean finger pose (used only with ``flat_hand_mean=False``)

Pose convention: ``pose`` (N, 3 J) axis-angle in radians, joint 0 (the wrist, global rotation)
first, no PCA (TACO's ``use_pca=False``). With ``flat_hand_mean=True`` (TACO's choice) a zero
pose is the flat hand; otherwise ``hands_mean`` is added to the finger entries.

Placement convention (TACO / manopth ``center_idx=0``): the output is translated so that the
root joint (wrist) sits at ``trans``; the model's own units are metres, so nothing is scaled
(manopth reports millimetres, which TACO's loader divides by 1000 before adding ``hand_trans``).
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse

from ..fileio import RefusedPickleError, SafeUnpickler

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


class _ChumpyStandIn:
    """Takes the place of a pickled ``chumpy`` object: keeps its state dict (the array is ``x``)."""

    def __setstate__(self, state: dict) -> None:
        self.state = state


class _SparseStandIn:
    """Takes the place of a pickled scipy CSC/CSR matrix, whose module path and attribute names
    differ between the scipy that wrote MANO's pickles and today's."""

    kind = scipy.sparse.csc_matrix

    def __setstate__(self, state: dict) -> None:
        self.state = state

    def toarray(self) -> np.ndarray:
        shape = self.state.get("_shape", self.state.get("shape"))
        return self.kind((self.state["data"], self.state["indices"], self.state["indptr"]), shape=shape).toarray()


class _CsrStandIn(_SparseStandIn):
    kind = scipy.sparse.csr_matrix


class _ManoUnpickler(SafeUnpickler):
    """Allow-list unpickler (``fileio.SafeUnpickler``: numpy arrays, plain containers) that also maps
    ``chumpy`` classes and scipy sparse matrices to stand-ins (no chumpy needed); refuses anything else."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "chumpy":
            return _ChumpyStandIn
        if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix"):
            return _SparseStandIn if name == "csc_matrix" else _CsrStandIn
        return super().find_class(module, name)


def _dense(value, key: str, path: Path) -> np.ndarray:
    """A float64 numpy array from a pickled numpy / scipy-sparse / chumpy value."""
    if isinstance(value, _ChumpyStandIn):
        if "x" not in value.state:
            raise ValueError(f"{path}: {key!r} is a derived chumpy expression, not a stored array; "
                             "re-export the model with plain arrays")
        value = value.state["x"]
    if hasattr(value, "toarray"):  # scipy sparse or its stand-in (MANO's J_regressor)
        value = value.toarray()
    return np.asarray(value, dtype=np.float64)


def rodrigues(axis_angle: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) radians -> rotation matrices (..., 3, 3)."""
    angle = np.linalg.norm(axis_angle, axis=-1, keepdims=True)  # (..., 1)
    axis = axis_angle / np.maximum(angle, 1e-12)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    skew = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*axis.shape[:-1], 3, 3)
    s, c = np.sin(angle)[..., None], np.cos(angle)[..., None]  # (..., 1, 1)
    return np.eye(3) + s * skew + (1.0 - c) * (skew @ skew)


@dataclass(frozen=True, eq=False)
class ManoModel:
    """MANO (or any model with MANO's structure) as numpy arrays; see the module docstring for shapes."""

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    faces: np.ndarray
    hands_mean: np.ndarray
    flat_hand_mean: bool = True
    name: str = "mano"

    def __post_init__(self) -> None:
        V, J = self.num_vertices, self.num_joints
        checks = {
            "v_template": (self.v_template.shape, (V, 3)),
            "shapedirs": (self.shapedirs.shape[:2], (V, 3)),
            "posedirs": (self.posedirs.shape, (V, 3, 9 * (J - 1))),
            "J_regressor": (self.J_regressor.shape, (J, V)),
            "weights": (self.weights.shape, (V, J)),
            "hands_mean": (self.hands_mean.shape, (3 * (J - 1),)),
        }
        for key, (got, want) in checks.items():
            if tuple(got) != want:
                raise ValueError(f"{self.name}: {key} has shape {tuple(got)}, expected {want}")
        if self.shapedirs.ndim != 3:
            raise ValueError(f"{self.name}: shapedirs must be (V, 3, S), got {self.shapedirs.shape}")
        if self.parents[0] != -1 or np.any(self.parents[1:] < 0) or np.any(self.parents[1:] >= np.arange(1, J)):
            raise ValueError(f"{self.name}: kintree parents must have the root first and every parent before "
                             f"its child, got {self.parents.tolist()}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or (self.faces.size and self.faces.max() >= V):
            raise ValueError(f"{self.name}: faces must be (Fc, 3) indices below {V}, got shape {self.faces.shape}")

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_joints(self) -> int:
        return int(self.J_regressor.shape[0])

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[2])

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: dict, flat_hand_mean: bool = True, name: str = "mano") -> "ManoModel":
        """Build from a dict with the MANO keys (values: numpy, scipy sparse or chumpy stand-ins)."""
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ValueError(f"{name}: missing MANO keys {missing}")
        arrays = {k: _dense(data[k], k, Path(name)) for k in REQUIRED_KEYS}
        J = arrays["J_regressor"].shape[0]
        parents = arrays["kintree_table"][0].astype(np.int64)
        parents[(parents < 0) | (parents >= J)] = -1  # MANO stores the root's parent as 2^32 - 1
        if "hands_mean" in data:
            hands_mean = _dense(data["hands_mean"], "hands_mean", Path(name))
        elif flat_hand_mean:
            hands_mean = np.zeros(3 * (J - 1))
        else:
            raise ValueError(f"{name}: flat_hand_mean=False needs the 'hands_mean' key")
        posedirs = arrays["posedirs"]
        return cls(
            v_template=arrays["v_template"],
            shapedirs=arrays["shapedirs"],
            posedirs=posedirs.reshape(posedirs.shape[0], 3, -1),
            J_regressor=arrays["J_regressor"],
            weights=arrays["weights"],
            parents=parents,
            faces=arrays["f"].astype(np.int64),
            hands_mean=hands_mean,
            flat_hand_mean=flat_hand_mean,
            name=name,
        )

    @classmethod
    def load(cls, path: str | Path, flat_hand_mean: bool = True) -> "ManoModel":
        """Read a MANO pickle (``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl``); errors name the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"MANO model {path} not found (download it from the MANO website)")
        try:
            with path.open("rb") as fh:
                data = _ManoUnpickler(fh, path, encoding="latin1").load()
        except RefusedPickleError as exc:
            raise ValueError(f"MANO model {exc}") from None
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, TypeError, IndexError,
                KeyError) as exc:
            raise ValueError(f"cannot read MANO model {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"MANO model {path}: expected a pickled dict, got {type(data).__name__}")
        return cls.from_dict(data, flat_hand_mean=flat_hand_mean, name=str(path))

    # ------------------------------------------------------------------ forward
    def __call__(self, pose: np.ndarray, betas: np.ndarray, trans: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Posed hands.

        Args:
            pose: (N, 3 J) axis-angle radians, wrist (global rotation) first.
            betas: (S,) shared or (N, S) per-frame shape coefficients.
            trans: optional (N, 3) metres, where the wrist joint lands (default: the origin).
        Returns:
            vertices (N, V, 3) and joints (N, J, 3), metres, wrist joint at ``trans``.
        """
        J, S = self.num_joints, self.num_betas
        pose = np.asarray(pose, dtype=np.float64)
        if pose.ndim != 2 or pose.shape[1] != 3 * J:
            raise ValueError(f"{self.name}: pose must be (N, {3 * J}) axis-angle, got {pose.shape}")
        N = pose.shape[0]
        betas = np.broadcast_to(np.asarray(betas, dtype=np.float64), (N, S)) if np.ndim(betas) == 1 else np.asarray(betas, dtype=np.float64)
        if betas.shape != (N, S):
            raise ValueError(f"{self.name}: betas must be ({S},) or ({N}, {S}), got {np.shape(betas)}")
        trans = np.zeros((N, 3)) if trans is None else np.asarray(trans, dtype=np.float64)
        if trans.shape != (N, 3):
            raise ValueError(f"{self.name}: trans must be ({N}, 3) metres, got {trans.shape}")
        if not self.flat_hand_mean:
            pose = pose + np.concatenate([np.zeros(3), self.hands_mean])

        # 1. Shape blend shapes and rest joints
        v_shaped = self.v_template + np.einsum("vcs,ns->nvc", self.shapedirs, betas)  # (N, V, 3)
        joints_rest = np.einsum("jv,nvc->njc", self.J_regressor, v_shaped)  # (N, J, 3)

        # 2. Pose blend shapes from (R_j - I) of the non-root joints
        rot = rodrigues(pose.reshape(N, J, 3))  # (N, J, 3, 3)
        pose_feature = (rot[:, 1:] - np.eye(3)).reshape(N, -1)  # (N, 9 (J-1))
        v_posed = v_shaped + np.einsum("vcp,np->nvc", self.posedirs, pose_feature)  # (N, V, 3)

        # 3. Forward kinematics: world transform of every joint
        local = np.zeros((N, J, 4, 4))
        local[:, :, :3, :3] = rot
        local[:, :, 3, 3] = 1.0
        local[:, 0, :3, 3] = joints_rest[:, 0]
        local[:, 1:, :3, 3] = joints_rest[:, 1:] - joints_rest[:, self.parents[1:]]
        world = [local[:, 0]]
        for j in range(1, J):
            world.append(world[self.parents[j]] @ local[:, j])
        world = np.stack(world, axis=1)  # (N, J, 4, 4)
        joints = world[:, :, :3, 3]  # (N, J, 3)

        # 4. Linear blend skinning with transforms relative to the rest joints
        skin = world.copy()
        skin[:, :, :3, 3] -= np.einsum("njab,njb->nja", world[:, :, :3, :3], joints_rest)
        blended = np.einsum("vj,njab->nvab", self.weights, skin)  # (N, V, 4, 4)
        vertices = np.einsum("nvab,nvb->nva", blended[:, :, :3, :3], v_posed) + blended[:, :, :3, 3]

        # 5. Wrist at trans (the root joint does not move under its own rotation)
        offset = (trans - joints_rest[:, 0])[:, None]  # (N, 1, 3)
        return vertices + offset, joints + offset
