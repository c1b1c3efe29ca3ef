"""The restricted unpicklers: detectron2 .pkl edge cases (object arrays, every protocol, Python 2 streams)
and crafted pickles that must run nothing."""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from georeason.cli import main
from georeason.data.safe_pickle import load_numpy_pickle, load_plain, loads_plain
from georeason.errors import GeoreasonError
from georeason.model.mask2former_init import initialise_from_mask2former, read_detectron2_pkl
from tests.conftest import fixture_sets


class Python2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 wrote its `str` (BINSTRING), as a Python 2 detectron2 did."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_str8(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_str8
    dispatch[str] = _save_str8


def python2_pickle(payload) -> bytes:
    """Protocol 2 as Python 2 with numpy 1 wrote it: `numpy.core.multiarray`, 8-bit strings."""
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(payload)
    return buffer.getvalue().replace(b"numpy._core.", b"numpy.core.")


def released_detectron2_state() -> dict[str, np.ndarray]:
    """The released fixture model's Mask2Former parts under detectron2 names (as test_model does)."""
    state = load_file(str(fixture_sets()[0] / "model" / "model.safetensors"))
    detectron2 = {}
    for name, tensor in state.items():
        if re.search(r"SEG_|CLASS_|new_query", name):
            continue
        for old, new in (("model.vision_tower.", "backbone."), ("pixel_decoder.", "sem_seg_head.pixel_decoder."),
                         ("predictor.", "sem_seg_head.predictor.")):
            if name.startswith(old):
                detectron2[new + name[len(old):]] = tensor.float().numpy()
    return detectron2


@pytest.mark.input_kind("runs", "Mask2Former .pkl written with pickle protocol 0-5, or by Python 2 (8-bit "
                                "strings, numpy.core names, copy_reg._reconstructor)",
                        "read through the numpy-only unpickler; the weights equal those written")
@pytest.mark.parametrize("writer", ["protocol-0", "protocol-1", "protocol-2", "protocol-5", "python-2"])
def test_harmless_numpy_pickles_of_any_protocol_initialise_the_model(tmp_path, writer):
    from georeason.model.convert import load_released
    from georeason.model.segearth import SegEarthModel

    payload = {"model": released_detectron2_state(), "__author__": "test", "matching_heuristics": True}
    data = python2_pickle(payload) if writer == "python-2" else pickle.dumps(payload, protocol=int(writer[-1]))
    checkpoint = tmp_path / "model_final.pkl"
    checkpoint.write_bytes(data)
    reference = load_released(fixture_sets()[0] / "model")
    model = SegEarthModel(reference.config)
    assert initialise_from_mask2former(model, checkpoint) == []
    for name, tensor in reference.state_dict().items():
        if name.startswith(("encoder.", "pixel_decoder.", "mask_decoder.")):
            assert torch.equal(tensor, model.state_dict()[name]), name


def test_numpy_pickle_details_python2_dict_subclass_scalars_and_byte_order(tmp_path):
    # copy_reg._reconstructor(OrderedDict, dict, items): how protocol 0/1 store a dict subclass.
    path = tmp_path / "reconstructor.pkl"
    path.write_bytes(b"ccopy_reg\n_reconstructor\n(ccollections\nOrderedDict\nc__builtin__\ndict\n"
                     b"(dS'b'\nI2\nsS'a'\nI1\nstR.")
    loaded = load_numpy_pickle(path)
    assert type(loaded) is collections.OrderedDict and list(loaded.items()) == [("b", 2), ("a", 1)]
    path.write_bytes(pickle.dumps({"model": {"big": np.arange(3, dtype=">i4"), "scalar": np.float32(2.5),
                                             "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3))}}))
    tensors = read_detectron2_pkl(path)
    assert tensors["big"].tolist() == [0, 1, 2] and tensors["big"].dtype == torch.int32
    assert tensors["scalar"].item() == 2.5 and tensors["scalar"].shape == ()
    assert tensors["fortran"].tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.input_kind("runs", "Mask2Former .pkl holding an object-dtype, text or non-array entry",
                        "refused with one line naming the file and the entry; never an internal error")
@pytest.mark.parametrize("value, message", [
    (np.array(["x", 1], dtype=object), "an array of Python objects (dtype object)"),
    (np.array(["ab", "c"]), "an array of dtype <U2"),
    ([1.0, 2.0], "expected a numpy array, got list"),
])
def test_non_numeric_entries_are_refused_naming_file_and_entry(tmp_path, capsys, value, message):
    checkpoint = tmp_path / "odd.pkl"
    checkpoint.write_bytes(pickle.dumps({"model": {"backbone.patch_embed.proj.weight": value}}, protocol=4))
    code = main(["init", "--preset", "tiny", "--mask2former", str(checkpoint), str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2 and "internal error" not in error, error
    assert f"{checkpoint}: model entry 'backbone.patch_embed.proj.weight': {message}" in error


# -- crafted pickles run nothing ----------------------------------------------------------------------
class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(marker) -> dict[str, bytes]:
    """Streams that would run a command, call a codec, build an arbitrary class or import a module."""
    command = f"touch {marker}".encode()
    return {
        "os.system via __reduce__": pickle.dumps({"model": {"x": _RunsCommand(marker)}}, protocol=2),
        "builtins.eval": b"c__builtin__\neval\n(S'__import__(\"os\").system(\"" + command + b"\")'\ntR.",
        "codec other than latin-1": b"c_codecs\nencode\n(S'x'\nS'zlib_codec'\ntR.",
        "_reconstructor of another class": b"ccopy_reg\n_reconstructor\n(cnumpy\nndarray\nc__builtin__\ndict\n"
                                            b"(dtR.",
        "numpy.load": b"cnumpy\nload\n(S'/etc/passwd'\ntR.",
        "subprocess": b"csubprocess\ncheck_output\n((S'sh'\nS'-c'\nS'" + command + b"'\nltR.",
    }


@pytest.mark.input_kind("runs", "pickle crafted to run code (.pkl checkpoint or refs file)",
                        "refused before anything runs, naming the file and what it asked for")
@pytest.mark.parametrize("name", list(_crafted("m")))
def test_crafted_pickles_run_nothing_in_either_reader(tmp_path, name):
    marker = tmp_path / "ran"
    path = tmp_path / "crafted.pkl"
    path.write_bytes(_crafted(marker)[name])
    for reader in (load_numpy_pickle, load_plain):
        with pytest.raises(GeoreasonError, match=rf"^{re.escape(str(path))}: refused to load \("):
            reader(path)
    assert not marker.exists()


@pytest.mark.input_kind("runs", "refs pickle written by Python 3 with protocol 0-2 (bytes as _codecs.encode)",
                        "read as the bytes written; any other codec is refused")
def test_plain_reader_reads_python3_bytes_of_old_protocols():
    payload = {"sentences": [{"raw": "river", "tokens": ["river"]}], "blob": b"\x00\xff\x80ab"}
    for protocol in (0, 1, 2):
        assert loads_plain(pickle.dumps(payload, protocol=protocol)) == payload
    with pytest.raises(GeoreasonError, match="not a readable pickle"):
        loads_plain(pickle.dumps(payload, protocol=2)[:-20])
