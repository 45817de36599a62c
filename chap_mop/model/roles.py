"""The CHAP model's layers by role, and which of them each fine-tuning choice trains.

No TensorFlow here: the search space is checked with these names before anything starts.
``trainable`` in a search space takes the keys of :data:`TRAINABLE`: ``all`` layers;
``lstm_head``, the BiLSTM and the head, with the CNN (the five convolutions and the bottleneck,
DeepPostures' ``cnn_model``) frozen; or ``head`` alone.
"""
CNN_ROLES = ("conv1", "conv2", "conv3", "conv4", "conv5", "bottleneck")
ROLES = (*CNN_ROLES, "bilstm", "head")  # in the order of the network
TRAINABLE = {"all": ROLES, "lstm_head": ("bilstm", "head"), "head": ("head",)}
DEFAULT_TRAINABLE = "all"
