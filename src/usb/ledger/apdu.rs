//! APDU encoding and the Tezos Baking app's status words.

use crate::usb::error::{DeviceError, ProtocolError};

/// The only class byte the Tezos Baking app accepts.
pub const CLA: u8 = 0x80;

/// Instruction bytes of the Tezos Baking app.
pub mod ins {
    /// App kind and version.
    pub const VERSION: u8 = 0x00;
    /// Authorize a key for baking (on-device approval).
    pub const AUTHORIZE_BAKING: u8 = 0x01;
    /// Public key of a path, no prompt.
    pub const GET_PUBLIC_KEY: u8 = 0x02;
    /// Sign a baking message.
    pub const SIGN: u8 = 0x04;
    /// Set the high watermark (on-device approval).
    pub const RESET: u8 = 0x06;
    /// The authorized key's path.
    pub const QUERY_AUTH_KEY: u8 = 0x07;
    /// The main chain's high watermark.
    pub const QUERY_MAIN_HWM: u8 = 0x08;
    /// Chain id, key and both watermarks in one approval.
    pub const SETUP: u8 = 0x0A;
    /// Every high watermark and the main chain id.
    pub const QUERY_ALL_HWM: u8 = 0x0B;
    /// Forget the authorized key.
    pub const DEAUTHORIZE: u8 = 0x0C;
    /// The authorized key's derivation type and path.
    pub const QUERY_AUTH_KEY_WITH_CURVE: u8 = 0x0D;
    /// Sign, and return the signed hash with the signature.
    pub const SIGN_WITH_HASH: u8 = 0x0F;
}

/// P1 of a first packet.
pub const P1_FIRST: u8 = 0x00;
/// P1 of a following packet.
pub const P1_NEXT: u8 = 0x01;
/// Bit of P1 marking the last packet.
pub const P1_LAST: u8 = 0x80;

/// One command APDU: CLA INS P1 P2 Lc data. Lc is always sent, 0 for no
/// data, as the Tezos apps expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apdu {
    /// Class.
    pub cla: u8,
    /// Instruction.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// Command data, at most 255 bytes.
    pub data: Vec<u8>,
}

impl Apdu {
    /// A Tezos Baking app command (CLA 0x80).
    pub fn baking(ins: u8, p1: u8, p2: u8, data: Vec<u8>) -> Self {
        Apdu {
            cla: CLA,
            ins,
            p1,
            p2,
            data,
        }
    }

    /// Wire bytes.
    pub fn encode(&self) -> Result<Vec<u8>, DeviceError> {
        let lc = u8::try_from(self.data.len()).map_err(|_| {
            DeviceError::Invalid(format!(
                "APDU data of {} bytes (at most 255)",
                self.data.len()
            ))
        })?;
        let mut v = Vec::with_capacity(5 + self.data.len());
        v.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2, lc]);
        v.extend_from_slice(&self.data);
        Ok(v)
    }

    /// Parse wire bytes (the device side). Lc must match the data length.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        if bytes.len() < 5 || bytes.len() != 5 + bytes[4] as usize {
            return Err(ProtocolError::BadReply {
                what: "APDU",
                detail: format!("{} bytes with Lc {:?}", bytes.len(), bytes.get(4)),
            });
        }
        Ok(Apdu {
            cla: bytes[0],
            ins: bytes[1],
            p1: bytes[2],
            p2: bytes[3],
            data: bytes[5..].to_vec(),
        })
    }
}

/// Status words of the Tezos Baking app.
pub mod sw {
    /// Success.
    pub const OK: u16 = 0x9000;
    /// Wrong values: on a sign, the high watermark refused it.
    pub const WRONG_VALUES: u16 = 0x6A80;
    /// Security status not satisfied: key not authorized, or locked.
    pub const SECURITY: u16 = 0x6982;
    /// The user rejected on the device.
    pub const REJECTED: u16 = 0x6985;
    /// The app could not parse the data.
    pub const PARSE_ERROR: u16 = 0x9405;
    /// Wrong parameter (P1/P2).
    pub const WRONG_PARAM: u16 = 0x6B00;
    /// Wrong length.
    pub const WRONG_LENGTH: u16 = 0x6C00;
    /// Unknown instruction.
    pub const INVALID_INS: u16 = 0x6D00;
    /// Wrong class (the open app is not a Tezos app).
    pub const WRONG_CLASS: u16 = 0x6E00;
    /// Wrong data length for this instruction.
    pub const WRONG_LENGTH_FOR_INS: u16 = 0x917E;
    /// Referenced data not found.
    pub const NOT_FOUND: u16 = 0x6A88;
    /// The command needs the HID transport.
    pub const HID_REQUIRED: u16 = 0x6983;
    /// Memory error on the device.
    pub const MEMORY_ERROR: u16 = 0x9200;
    /// The device is locked (PIN screen), firmware-level answer.
    pub const LOCKED_DEVICE: u16 = 0x5515;
    /// No app is open (dashboard), firmware-level answer.
    pub const APP_NOT_OPEN: u16 = 0x6E01;
    /// No app is open, older firmware.
    pub const APP_NOT_OPEN_OLD: u16 = 0x6511;
}

/// What the command was, for status words whose meaning depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// SIGN or SIGN_WITH_HASH: 0x6A80 means the device watermark refused.
    Sign,
    /// A command shown to a person for approval: 0x6985 means rejected.
    Approval,
    /// Anything else.
    Other,
}

/// Map a status word to `Ok` or the typed error it stands for.
pub fn check_status(status: u16, kind: CommandKind, action: &str) -> Result<(), DeviceError> {
    use sw::*;
    let meaning = match status {
        OK => return Ok(()),
        WRONG_VALUES if kind == CommandKind::Sign => {
            return Err(DeviceError::RefusedByDeviceWatermark {
                detail: format!("{action}: status 0x6A80, at or below the Ledger's high watermark"),
            })
        }
        SECURITY => return Err(DeviceError::NotAuthorized),
        REJECTED => {
            return Err(DeviceError::UserRejected {
                action: action.to_string(),
            })
        }
        LOCKED_DEVICE => {
            return Err(DeviceError::Locked {
                detail: "the Ledger is locked; enter the PIN and reopen the Tezos Baking app"
                    .into(),
            })
        }
        WRONG_CLASS | APP_NOT_OPEN | APP_NOT_OPEN_OLD => {
            return Err(DeviceError::WrongApp {
                detail: format!("{action}: status {status:#06x} (no Tezos app answers class 0x80)"),
            })
        }
        WRONG_VALUES => "wrong values",
        PARSE_ERROR => "parse error",
        WRONG_PARAM => "wrong parameter",
        WRONG_LENGTH => "wrong length",
        INVALID_INS => "instruction not supported by this app version",
        WRONG_LENGTH_FOR_INS => "wrong length for this instruction",
        NOT_FOUND => "referenced data not found",
        HID_REQUIRED => "HID transport required",
        MEMORY_ERROR => "memory error on the device",
        other => return Err(DeviceError::UnknownStatus { sw: other }),
    };
    Err(DeviceError::Status {
        sw: status,
        meaning,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_and_limits() {
        let a = Apdu::baking(ins::RESET, 0, 0, 1000u32.to_be_bytes().to_vec());
        let bytes = a.encode().unwrap();
        assert_eq!(bytes, [0x80, 0x06, 0, 0, 4, 0, 0, 0x03, 0xe8]);
        assert_eq!(Apdu::decode(&bytes).unwrap(), a);
        assert!(Apdu::decode(&bytes[..8]).is_err());
        assert!(Apdu::baking(0, 0, 0, vec![0; 256]).encode().is_err());
    }

    #[test]
    fn status_words_map_to_typed_errors() {
        assert!(check_status(0x9000, CommandKind::Sign, "x").is_ok());
        assert!(check_status(0x6A80, CommandKind::Sign, "x")
            .unwrap_err()
            .is_watermark_refusal());
        assert!(matches!(
            check_status(0x6A80, CommandKind::Other, "x"),
            Err(DeviceError::Status { sw: 0x6A80, .. })
        ));
        assert!(matches!(
            check_status(0x6985, CommandKind::Approval, "reset"),
            Err(DeviceError::UserRejected { .. })
        ));
        assert!(matches!(
            check_status(0x5515, CommandKind::Other, "x"),
            Err(DeviceError::Locked { .. })
        ));
        assert!(matches!(
            check_status(0x6E00, CommandKind::Other, "x"),
            Err(DeviceError::WrongApp { .. })
        ));
        assert_eq!(
            check_status(0x6F42, CommandKind::Sign, "x"),
            Err(DeviceError::UnknownStatus { sw: 0x6F42 })
        );
        for known in [
            0x9405, 0x6B00, 0x6C00, 0x6D00, 0x917E, 0x6A88, 0x6983, 0x9200,
        ] {
            assert!(matches!(
                check_status(known, CommandKind::Other, "x"),
                Err(DeviceError::Status { .. })
            ));
        }
    }
}
