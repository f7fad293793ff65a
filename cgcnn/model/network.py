"""The crystal graph convolutional neural network (upstream ``model.py``).

T. Xie, J. C. Grossman, Phys. Rev. Lett. 120, 145301 (2018), Eq. 5 (gated
convolution) and mean pooling.  State-dict keys and shapes are those of the
upstream code, so upstream checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvLayer", "CrystalGraphConvNet", "batch_index"]


class ConvLayer(nn.Module):
    """One gated graph convolution (Xie & Grossman 2018, Eq. 5).

    ``v_i' = softplus(v_i + BN(sum_j sigmoid(z_ij W_f + b_f) * softplus(z_ij W_s + b_s)))``
    with ``z_ij = v_i ⊕ v_j ⊕ u_ij`` and the batch normalisation of upstream.

    Parameters
    ----------
    atom_fea_len : int
        Length A of the hidden atom features.
    nbr_fea_len : int
        Length B of the edge features.
    """

    def __init__(self, atom_fea_len: int, nbr_fea_len: int):
        super().__init__()
        self.atom_fea_len = atom_fea_len
        self.nbr_fea_len = nbr_fea_len
        self.fc_full = nn.Linear(2 * atom_fea_len + nbr_fea_len, 2 * atom_fea_len)
        self.sigmoid = nn.Sigmoid()
        self.softplus1 = nn.Softplus()
        self.bn1 = nn.BatchNorm1d(2 * atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)
        self.softplus2 = nn.Softplus()

    def forward(self, atom_in_fea: torch.Tensor, nbr_fea: torch.Tensor, nbr_fea_idx: torch.Tensor) -> torch.Tensor:
        """Convolve.

        N: total number of atoms in the batch, M: max number of neighbours.

        Parameters
        ----------
        atom_in_fea : torch.Tensor shape (N, atom_fea_len)
            Atom hidden features before the convolution.
        nbr_fea : torch.Tensor shape (N, M, nbr_fea_len)
            Bond features of each atom's M neighbours.
        nbr_fea_idx : torch.LongTensor shape (N, M)
            Indices of the M neighbours of each atom.

        Returns
        -------
        torch.Tensor shape (N, atom_fea_len)
            Atom hidden features after the convolution.
        """
        n, m = nbr_fea_idx.shape
        a = self.atom_fea_len
        # fc_full(v_i ⊕ v_j ⊕ u_ij) split by blocks of its weight: the self and
        # neighbour parts are computed once per atom, not once per bond.
        w, bias = self.fc_full.weight, self.fc_full.bias
        if self.training or not self.bn1.track_running_stats or self.bn1.running_mean is None:
            self_part = F.linear(atom_in_fea, w[:, :a], bias)  # (N, 2A)
            nbr_part = F.linear(atom_in_fea, w[:, a : 2 * a])  # (N, 2A)
            total_gated_fea = F.linear(nbr_fea, w[:, 2 * a :])  # edge part, (N, M, 2A)
            total_gated_fea += self_part.unsqueeze(1)  # in place: no second (N, M, 2A) tensor
            total_gated_fea += nbr_part[nbr_fea_idx]
            total_gated_fea = self.bn1(total_gated_fea.view(-1, 2 * a)).view(n, m, 2 * a)
        else:
            # evaluation: bn1 is the affine map x * scale + shift, folded into fc_full's weight
            # and bias; the edge product is accumulated into the gathered neighbour parts
            bn = self.bn1
            scale = torch.rsqrt(bn.running_var + bn.eps)
            if bn.affine:
                scale = scale * bn.weight
            shift = -bn.running_mean * scale + (bn.bias if bn.affine else 0)
            w = w * scale.unsqueeze(1)
            self_part = F.linear(atom_in_fea, w[:, :a], bias * scale + shift)  # (N, 2A)
            nbr_part = F.linear(atom_in_fea, w[:, a : 2 * a])  # (N, 2A)
            total_gated_fea = nbr_part.index_select(0, nbr_fea_idx.reshape(-1))  # (N * M, 2A)
            total_gated_fea.view(n, m, 2 * a).add_(self_part.unsqueeze(1))
            total_gated_fea.addmm_(nbr_fea.reshape(n * m, -1), w[:, 2 * a :].t())  # + edge part
            if not torch.is_grad_enabled():
                # the gate in place in its two halves: the same kernels and bits as below without three
                # new (N * M, A) tensors (a quarter less time on a CPU)
                nbr_filter, nbr_core = total_gated_fea[:, :a], total_gated_fea[:, a:]
                nbr_filter.sigmoid_()
                torch.ops.aten.softplus.out(nbr_core, self.softplus1.beta, self.softplus1.threshold, out=nbr_core)
                nbr_sumed = torch.sum(nbr_filter.mul_(nbr_core).view(n, m, a), dim=1)
                return self.softplus2(atom_in_fea + self.bn2(nbr_sumed))
            total_gated_fea = total_gated_fea.view(n, m, 2 * a)
        nbr_filter, nbr_core = total_gated_fea.chunk(2, dim=2)
        nbr_sumed = torch.sum(self.sigmoid(nbr_filter) * self.softplus1(nbr_core), dim=1)
        nbr_sumed = self.bn2(nbr_sumed)
        return self.softplus2(atom_in_fea + nbr_sumed)


def batch_index(crystal_atom_idx: Sequence[torch.Tensor], n_atoms: int) -> torch.Tensor:
    """Crystal index of every atom, shape (N,), from upstream's list of B index tensors.

    One scatter on the device of the index tensors (no per-crystal step, no copy).
    """
    flat = torch.cat(list(crystal_atom_idx))
    lengths = torch.tensor([len(idx) for idx in crystal_atom_idx], device=flat.device)
    out = torch.empty(n_atoms, dtype=torch.long, device=flat.device)
    out[flat] = torch.repeat_interleave(torch.arange(len(crystal_atom_idx), device=flat.device), lengths,
                                        output_size=len(flat))
    return out


class CrystalGraphConvNet(nn.Module):
    """CGCNN for crystal property prediction (upstream ``CrystalGraphConvNet``).

    embedding → n_conv × :class:`ConvLayer` → mean pooling → softplus →
    ``conv_to_fc`` → softplus → (n_h − 1) × (``fcs.j`` → softplus) → ``fc_out``.
    The input of ``fc_out`` is the crystal feature vector ``crys_fea`` of length
    ``h_fea_len`` used for transfer learning (Zhu et al., EES 14, 3559 (2021)).

    Parameters
    ----------
    orig_atom_fea_len : int
        Length of the input atom features (92 for CGCNN's one-hot table).
    nbr_fea_len : int
        Number of Gaussian edge features (41 for the default graph).
    atom_fea_len : int
        Hidden atom feature length (64).
    n_conv : int
        Number of convolutions (3).
    h_fea_len : int
        Hidden length after pooling, the length of ``crys_fea`` (128).
    n_h : int
        Number of hidden layers after pooling (1).
    classification : bool
        Two log-softmax outputs instead of one regression output.
    """

    def __init__(
        self,
        orig_atom_fea_len: int,
        nbr_fea_len: int,
        atom_fea_len: int = 64,
        n_conv: int = 3,
        h_fea_len: int = 128,
        n_h: int = 1,
        classification: bool = False,
    ):
        super().__init__()
        self.classification = classification
        self.embedding = nn.Linear(orig_atom_fea_len, atom_fea_len)
        self.convs = nn.ModuleList([ConvLayer(atom_fea_len, nbr_fea_len) for _ in range(n_conv)])
        self.conv_to_fc = nn.Linear(atom_fea_len, h_fea_len)
        self.conv_to_fc_softplus = nn.Softplus()
        if n_h > 1:
            self.fcs = nn.ModuleList([nn.Linear(h_fea_len, h_fea_len) for _ in range(n_h - 1)])
            self.softpluses = nn.ModuleList([nn.Softplus() for _ in range(n_h - 1)])
        self.fc_out = nn.Linear(h_fea_len, 2 if classification else 1)
        if classification:
            self.logsoftmax = nn.LogSoftmax(dim=1)
            self.dropout = nn.Dropout()

    def crystal_features(
        self,
        atom_fea: torch.Tensor,
        nbr_fea: torch.Tensor,
        nbr_fea_idx: torch.Tensor,
        crystal_atom_idx: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """``crys_fea``, the input of ``fc_out``.

        N: total number of atoms in the batch, M: max number of neighbours,
        B: number of crystals in the batch.

        Parameters
        ----------
        atom_fea : torch.Tensor shape (N, orig_atom_fea_len)
        nbr_fea : torch.Tensor shape (N, M, nbr_fea_len)
        nbr_fea_idx : torch.LongTensor shape (N, M)
        crystal_atom_idx : list of B torch.LongTensor
            Atom indices of each crystal.

        Returns
        -------
        torch.Tensor shape (B, h_fea_len)
        """
        atom_fea = self.embedding(atom_fea)
        for conv in self.convs:
            atom_fea = conv(atom_fea, nbr_fea, nbr_fea_idx)
        crys_fea = self.pooling(atom_fea, crystal_atom_idx)
        crys_fea = self.conv_to_fc_softplus(self.conv_to_fc(self.conv_to_fc_softplus(crys_fea)))
        if self.classification:
            crys_fea = self.dropout(crys_fea)
        if hasattr(self, "fcs"):
            for fc, softplus in zip(self.fcs, self.softpluses):
                crys_fea = softplus(fc(crys_fea))
        return crys_fea

    def forward(self, atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx) -> torch.Tensor:
        """Predict; arguments as :meth:`crystal_features`.

        Returns
        -------
        torch.Tensor shape (B, 1), or (B, 2) log-probabilities for classification
        """
        out = self.fc_out(self.crystal_features(atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx))
        return self.logsoftmax(out) if self.classification else out

    @staticmethod
    def pooling(atom_fea: torch.Tensor, crystal_atom_idx: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean of the atom features of each crystal: (N, A) → (B, A)."""
        index = batch_index(crystal_atom_idx, atom_fea.shape[0])
        n_cryst = len(crystal_atom_idx)
        summed = torch.zeros(n_cryst, atom_fea.shape[1], dtype=atom_fea.dtype, device=atom_fea.device)
        summed.index_add_(0, index, atom_fea)
        counts = torch.bincount(index, minlength=n_cryst).to(atom_fea.dtype).unsqueeze(1)
        return summed / counts
