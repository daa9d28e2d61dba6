// A minimal media manager for SmallWebRTCTransport: the microphone via getUserMedia.
//
// The transport's default, DailyMediaManager, runs Daily's device layer, which downloads its
// "call machine" from c.daily.co when devices are initialised; the test machine has no route
// there. The transport accepts any object with the MediaManager interface (its `mediaManager`
// option), and only asks it for devices and local tracks: the offer/answer, trickle ICE and
// data channel under test are the official transport's own.

export class MicMediaManager {
  constructor() {
    this._callbacks = {};
    this._micEnabled = true;
    this._stream = null;
    this._mic = {};
  }

  setUserAudioCallback() {}

  setClientOptions(options) {
    this._callbacks = options.callbacks ?? {};
    this._micEnabled = options.enableMic ?? true;
  }

  async initialize() {
    if (this._stream) return;
    this._stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const [track] = this._stream.getAudioTracks();
    track.enabled = this._micEnabled;
    const mics = (await navigator.mediaDevices.enumerateDevices()).filter(
      (d) => d.kind === "audioinput",
    );
    this._mic = mics.find((d) => d.label === track.label) ?? mics[0] ?? {};
    this._callbacks.onAvailableMicsUpdated?.(mics);
    this._callbacks.onMicUpdated?.(this._mic);
    this._callbacks.onTrackStarted?.(track, { id: "local", name: "", local: true });
  }

  async connect() {
    await this.initialize();
  }

  async disconnect() {
    for (const track of this._stream?.getTracks() ?? []) track.stop();
    this._stream = null;
  }

  async userStartedSpeaking() {}
  bufferBotAudio() {
    return undefined;
  }

  async getAllMics() {
    return (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  }
  async getAllCams() {
    return [];
  }
  async getAllSpeakers() {
    return [];
  }
  updateMic() {}
  updateCam() {}
  updateSpeaker() {}
  get selectedMic() {
    return this._mic;
  }
  get selectedCam() {
    return {};
  }
  get selectedSpeaker() {
    return {};
  }

  enableMic(enable) {
    this._micEnabled = enable;
    for (const track of this._stream?.getAudioTracks() ?? []) track.enabled = enable;
  }
  enableCam() {}
  enableScreenShare() {}
  get isCamEnabled() {
    return false;
  }
  get isMicEnabled() {
    return this._micEnabled;
  }
  get isSharingScreen() {
    return false;
  }
  get supportsScreenShare() {
    return false;
  }

  tracks() {
    return { local: { audio: this._stream?.getAudioTracks()[0] } };
  }
}
