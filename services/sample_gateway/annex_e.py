"""DICOM PS3.15 Annex E, Table E.1-1, as data.

The Basic Application Level Confidentiality Profile lists, for each attribute that
can identify a patient, a person or an institution, the action a de-identifier
takes.  This module holds that table (edition 2024e, 617 attributes plus the
repeating-group and private-attribute rows) with the columns of the options this
gateway applies, and resolves a row to the single action to take.

Action codes (PS3.15 Table E.1-1a):

====== ====================================================================
D      replace with a non-zero length dummy value consistent with the VR
Z      replace with a zero length value (or a dummy consistent with the VR)
X      remove
K      keep (sequences are still processed item by item)
C      clean: keep, with the identifying information modified (dates
       shifted by the Retain Longitudinal Temporal Information with Modified
       Dates Option, descriptors cleaned by the Clean Descriptors Option)
U      replace a UID with a non-zero length UID, consistently within the
       set of instances
X/Z, X/D, Z/D, X/Z/D, X/Z/U*
       remove, unless the IOD needs the attribute (then Z, D or U*)
====== ====================================================================

Choices where the standard leaves one (see :func:`resolve_action`):

* a compound code that allows ``Z`` resolves to ``Z``: the attribute stays, empty,
  so Type 2 attributes keep the object conformant;
* ``X/D`` resolves to ``X``: removing is the least information, and none of the
  attributes concerned is Type 1 in the image IODs the gateway serves;
* ``X/Z/U*`` (Referenced/Source Image Sequence) resolves to ``U``: the sequence is
  kept and every UID inside it is remapped, so references between the delivered
  instances still resolve.

Option columns kept here (a letter per option in each row's ``flags``):

``M``  Retain Longitudinal Temporal Information with Modified Dates: ``C``
``C``  Clean Descriptors: ``C``
``P``  Retain Patient Characteristics: ``K``
``p``  Retain Patient Characteristics: ``C`` (free text; this gateway removes it)

The table is data: the facts of the standard, not anyone's code.  So are the other
facts of the standard the de-identifier relies on, at the end of this module: words
of PS3.3 that a code string holds whatever the patient, coding schemes of PS3.16, and
the class and coding-scheme UIDs outside pydicom's UID dictionary it keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

#: Profile and option codes, DICOM CID 7050 "De-identification Method".
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
MODIFIED_DATES_CODE = (
    "113107",
    "DCM",
    "Retain Longitudinal Temporal Information Modified Dates Option",
)
CLEAN_DESCRIPTORS_CODE = ("113105", "DCM", "Clean Descriptors Option")
PATIENT_CHARACTERISTICS_CODE = ("113108", "DCM", "Retain Patient Characteristics Option")

ACTIONS = frozenset({"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"})
#: The single actions a row resolves to.
RESOLVED_ACTIONS = frozenset({"D", "Z", "X", "K", "C", "U"})

FLAG_MODIFIED_DATES = "M"
FLAG_CLEAN_DESCRIPTORS = "C"
FLAG_PATIENT_CHARACTERISTICS_KEEP = "P"
FLAG_PATIENT_CHARACTERISTICS_CLEAN = "p"


class ProfileRow(NamedTuple):
    """One row of Table E.1-1."""

    tag: int
    keyword: str
    basic: str
    flags: str


@dataclass(frozen=True)
class Options:
    """The profile options in force."""

    modified_dates: bool = True
    clean_descriptors: bool = True
    patient_characteristics: bool = False


# (tag, keyword, basic profile action, option flags)
_ROWS: tuple[tuple[int, str, str, str], ...] = (
    (0x00001000, "AffectedSOPInstanceUID", "X", ""),
    (0x00001001, "RequestedSOPInstanceUID", "U", ""),
    (0x00020003, "MediaStorageSOPInstanceUID", "U", ""),
    (0x00041511, "ReferencedSOPInstanceUIDInFile", "U", ""),
    (0x00080012, "InstanceCreationDate", "X/D", "M"),
    (0x00080013, "InstanceCreationTime", "X/Z/D", "M"),
    (0x00080014, "InstanceCreatorUID", "U", ""),
    (0x00080015, "InstanceCoercionDateTime", "X", "M"),
    (0x00080017, "AcquisitionUID", "U", ""),
    (0x00080018, "SOPInstanceUID", "U", ""),
    (0x00080019, "PyramidUID", "U", ""),
    (0x00080020, "StudyDate", "Z", "M"),
    (0x00080021, "SeriesDate", "X/D", "M"),
    (0x00080022, "AcquisitionDate", "X/Z", "M"),
    (0x00080023, "ContentDate", "Z/D", "M"),
    (0x00080024, "OverlayDate", "X", "M"),
    (0x00080025, "CurveDate", "X", "M"),
    (0x0008002A, "AcquisitionDateTime", "X/Z/D", "M"),
    (0x00080030, "StudyTime", "Z", "M"),
    (0x00080031, "SeriesTime", "X/D", "M"),
    (0x00080032, "AcquisitionTime", "X/Z", "M"),
    (0x00080033, "ContentTime", "Z/D", "M"),
    (0x00080034, "OverlayTime", "X", "M"),
    (0x00080035, "CurveTime", "X", "M"),
    (0x00080050, "AccessionNumber", "Z", ""),
    (0x00080054, "RetrieveAETitle", "X", ""),
    (0x00080055, "StationAETitle", "X", ""),
    (0x00080058, "FailedSOPInstanceUIDList", "U", ""),
    (0x00080080, "InstitutionName", "X/Z/D", ""),
    (0x00080081, "InstitutionAddress", "X", ""),
    (0x00080082, "InstitutionCodeSequence", "X/Z/D", ""),
    (0x00080090, "ReferringPhysicianName", "Z", ""),
    (0x00080092, "ReferringPhysicianAddress", "X", ""),
    (0x00080094, "ReferringPhysicianTelephoneNumbers", "X", ""),
    (0x00080096, "ReferringPhysicianIdentificationSequence", "X", ""),
    (0x0008009C, "ConsultingPhysicianName", "Z", ""),
    (0x0008009D, "ConsultingPhysicianIdentificationSequence", "X", ""),
    (0x00080106, "ContextGroupVersion", "D", "M"),
    (0x00080107, "ContextGroupLocalVersion", "D", "M"),
    (0x00080201, "TimezoneOffsetFromUTC", "X", "M"),
    (0x00081000, "NetworkID", "X", ""),
    (0x00081010, "StationName", "X/Z/D", ""),
    (0x00081030, "StudyDescription", "X", "C"),
    (0x0008103E, "SeriesDescription", "X", "C"),
    (0x00081040, "InstitutionalDepartmentName", "X", ""),
    (0x00081041, "InstitutionalDepartmentTypeCodeSequence", "X", ""),
    (0x00081048, "PhysiciansOfRecord", "X", ""),
    (0x00081049, "PhysiciansOfRecordIdentificationSequence", "X", ""),
    (0x00081050, "PerformingPhysicianName", "X", ""),
    (0x00081052, "PerformingPhysicianIdentificationSequence", "X", ""),
    (0x00081060, "NameOfPhysiciansReadingStudy", "X", ""),
    (0x00081062, "PhysiciansReadingStudyIdentificationSequence", "X", ""),
    (0x00081070, "OperatorsName", "X/Z/D", ""),
    (0x00081072, "OperatorIdentificationSequence", "X/D", ""),
    (0x00081080, "AdmittingDiagnosesDescription", "X", "C"),
    (0x00081084, "AdmittingDiagnosesCodeSequence", "X", "C"),
    (0x00081088, "PyramidDescription", "X", "C"),
    (0x00081110, "ReferencedStudySequence", "X/Z", ""),
    (0x00081111, "ReferencedPerformedProcedureStepSequence", "X/Z/D", ""),
    (0x00081120, "ReferencedPatientSequence", "X", ""),
    (0x00081140, "ReferencedImageSequence", "X/Z/U*", ""),
    (0x00081155, "ReferencedSOPInstanceUID", "U", ""),
    (0x00081195, "TransactionUID", "U", ""),
    (0x00082111, "DerivationDescription", "X", "C"),
    (0x00082112, "SourceImageSequence", "X/Z/U*", ""),
    (0x00083010, "IrradiationEventUID", "U", ""),
    (0x00084000, "IdentifyingComments", "X", "C"),
    (0x00100010, "PatientName", "Z", ""),
    (0x00100020, "PatientID", "Z/D", ""),
    (0x00100021, "IssuerOfPatientID", "X", ""),
    (0x00100030, "PatientBirthDate", "Z", ""),
    (0x00100032, "PatientBirthTime", "X", ""),
    (0x00100040, "PatientSex", "Z", "P"),
    (0x00100050, "PatientInsurancePlanCodeSequence", "X", ""),
    (0x00100101, "PatientPrimaryLanguageCodeSequence", "X", ""),
    (0x00100102, "PatientPrimaryLanguageModifierCodeSequence", "X", ""),
    (0x00101000, "OtherPatientIDs", "X", ""),
    (0x00101001, "OtherPatientNames", "X", ""),
    (0x00101002, "OtherPatientIDsSequence", "X", ""),
    (0x00101005, "PatientBirthName", "X", ""),
    (0x00101010, "PatientAge", "X", "P"),
    (0x00101020, "PatientSize", "X", "P"),
    (0x00101030, "PatientWeight", "X", "P"),
    (0x00101040, "PatientAddress", "X", ""),
    (0x00101050, "InsurancePlanIdentification", "X", ""),
    (0x00101060, "PatientMotherBirthName", "X", ""),
    (0x00101080, "MilitaryRank", "X", ""),
    (0x00101081, "BranchOfService", "X", ""),
    (0x00101090, "MedicalRecordLocator", "X", ""),
    (0x00101100, "ReferencedPatientPhotoSequence", "X", ""),
    (0x00102000, "MedicalAlerts", "X", "C"),
    (0x00102110, "Allergies", "X", "Cp"),
    (0x00102150, "CountryOfResidence", "X", ""),
    (0x00102152, "RegionOfResidence", "X", ""),
    (0x00102154, "PatientTelephoneNumbers", "X", ""),
    (0x00102155, "PatientTelecomInformation", "X", ""),
    (0x00102160, "EthnicGroup", "X", "P"),
    (0x00102180, "Occupation", "X", "C"),
    (0x001021A0, "SmokingStatus", "X", "P"),
    (0x001021B0, "AdditionalPatientHistory", "X", "C"),
    (0x001021C0, "PregnancyStatus", "X", "P"),
    (0x001021D0, "LastMenstrualDate", "X", "M"),
    (0x001021F0, "PatientReligiousPreference", "X", ""),
    (0x00102203, "PatientSexNeutered", "X/Z", "P"),
    (0x00102297, "ResponsiblePerson", "X", ""),
    (0x00102299, "ResponsibleOrganization", "X", ""),
    (0x00104000, "PatientComments", "X", "C"),
    (0x00120010, "ClinicalTrialSponsorName", "D", ""),
    (0x00120020, "ClinicalTrialProtocolID", "D", ""),
    (0x00120021, "ClinicalTrialProtocolName", "Z", ""),
    (0x00120022, "IssuerOfClinicalTrialProtocolID", "X", ""),
    (0x00120023, "OtherClinicalTrialProtocolIDsSequence", "X", ""),
    (0x00120030, "ClinicalTrialSiteID", "Z", ""),
    (0x00120031, "ClinicalTrialSiteName", "Z", ""),
    (0x00120032, "IssuerOfClinicalTrialSiteID", "X", ""),
    (0x00120040, "ClinicalTrialSubjectID", "D", ""),
    (0x00120041, "IssuerOfClinicalTrialSubjectID", "X", ""),
    (0x00120042, "ClinicalTrialSubjectReadingID", "D", ""),
    (0x00120043, "IssuerOfClinicalTrialSubjectReadingID", "X", ""),
    (0x00120050, "ClinicalTrialTimePointID", "Z", ""),
    (0x00120051, "ClinicalTrialTimePointDescription", "X", "C"),
    (0x00120055, "IssuerOfClinicalTrialTimePointID", "X", ""),
    (0x00120060, "ClinicalTrialCoordinatingCenterName", "Z", ""),
    (0x00120071, "ClinicalTrialSeriesID", "X", ""),
    (0x00120072, "ClinicalTrialSeriesDescription", "X", "C"),
    (0x00120073, "IssuerOfClinicalTrialSeriesID", "X", ""),
    (0x00120081, "ClinicalTrialProtocolEthicsCommitteeName", "D", ""),
    (0x00120082, "ClinicalTrialProtocolEthicsCommitteeApprovalNumber", "X", ""),
    (0x00120086, "EthicsCommitteeApprovalEffectivenessStartDate", "X", "M"),
    (0x00120087, "EthicsCommitteeApprovalEffectivenessEndDate", "X", "M"),
    (0x0014407C, "CalibrationTime", "X", "M"),
    (0x0014407E, "CalibrationDate", "X", "M"),
    (0x0016002B, "MakerNote", "X", "C"),
    (0x0016004B, "DeviceSettingDescription", "X", "C"),
    (0x0016004D, "CameraOwnerName", "X", ""),
    (0x0016004E, "LensSpecification", "X", ""),
    (0x0016004F, "LensMake", "X", ""),
    (0x00160050, "LensModel", "X", ""),
    (0x00160051, "LensSerialNumber", "X", ""),
    (0x00160070, "GPSVersionID", "X", ""),
    (0x00160071, "GPSLatitudeRef", "X", ""),
    (0x00160072, "GPSLatitude", "X", ""),
    (0x00160073, "GPSLongitudeRef", "X", ""),
    (0x00160074, "GPSLongitude", "X", ""),
    (0x00160075, "GPSAltitudeRef", "X", ""),
    (0x00160076, "GPSAltitude", "X", ""),
    (0x00160077, "GPSTimeStamp", "X", ""),
    (0x00160078, "GPSSatellites", "X", ""),
    (0x00160079, "GPSStatus", "X", ""),
    (0x0016007A, "GPSMeasureMode", "X", ""),
    (0x0016007B, "GPSDOP", "X", ""),
    (0x0016007C, "GPSSpeedRef", "X", ""),
    (0x0016007D, "GPSSpeed", "X", ""),
    (0x0016007E, "GPSTrackRef", "X", ""),
    (0x0016007F, "GPSTrack", "X", ""),
    (0x00160080, "GPSImgDirectionRef", "X", ""),
    (0x00160081, "GPSImgDirection", "X", ""),
    (0x00160082, "GPSMapDatum", "X", ""),
    (0x00160083, "GPSDestLatitudeRef", "X", ""),
    (0x00160084, "GPSDestLatitude", "X", ""),
    (0x00160085, "GPSDestLongitudeRef", "X", ""),
    (0x00160086, "GPSDestLongitude", "X", ""),
    (0x00160087, "GPSDestBearingRef", "X", ""),
    (0x00160088, "GPSDestBearing", "X", ""),
    (0x00160089, "GPSDestDistanceRef", "X", ""),
    (0x0016008A, "GPSDestDistance", "X", ""),
    (0x0016008B, "GPSProcessingMethod", "X", ""),
    (0x0016008C, "GPSAreaInformation", "X", ""),
    (0x0016008D, "GPSDateStamp", "X", "M"),
    (0x0016008E, "GPSDifferential", "X", ""),
    (0x00180010, "ContrastBolusAgent", "Z/D", "C"),
    (0x00180027, "InterventionDrugStopTime", "X", "M"),
    (0x00180035, "InterventionDrugStartTime", "X", "M"),
    (0x00181000, "DeviceSerialNumber", "X/Z/D", ""),
    (0x00181002, "DeviceUID", "U", ""),
    (0x00181004, "PlateID", "X", ""),
    (0x00181005, "GeneratorID", "X", ""),
    (0x00181007, "CassetteID", "X", ""),
    (0x00181008, "GantryID", "X", ""),
    (0x00181009, "UniqueDeviceIdentifier", "X", ""),
    (0x0018100A, "UDISequence", "X", ""),
    (0x0018100B, "ManufacturerDeviceClassUID", "U", ""),
    (0x00181012, "DateOfSecondaryCapture", "X", "M"),
    (0x00181014, "TimeOfSecondaryCapture", "X", "M"),
    (0x00181030, "ProtocolName", "X/D", "C"),
    (0x00181042, "ContrastBolusStartTime", "X", "M"),
    (0x00181043, "ContrastBolusStopTime", "X", "M"),
    (0x00181072, "RadiopharmaceuticalStartTime", "X", "M"),
    (0x00181073, "RadiopharmaceuticalStopTime", "X", "M"),
    (0x00181078, "RadiopharmaceuticalStartDateTime", "X", "M"),
    (0x00181079, "RadiopharmaceuticalStopDateTime", "X", "M"),
    (0x001811BB, "AcquisitionFieldOfViewLabel", "D", "C"),
    (0x00181200, "DateOfLastCalibration", "X", "M"),
    (0x00181201, "TimeOfLastCalibration", "X", "M"),
    (0x00181202, "DateTimeOfLastCalibration", "X", "M"),
    (0x00181203, "CalibrationDateTime", "Z", "M"),
    (0x00181204, "DateOfManufacture", "X", "M"),
    (0x00181205, "DateOfInstallation", "X", "M"),
    (0x00181400, "AcquisitionDeviceProcessingDescription", "X/D", "C"),
    (0x00182042, "TargetUID", "U", ""),
    (0x00184000, "AcquisitionComments", "X", "C"),
    (0x00185011, "TransducerIdentificationSequence", "X", ""),
    (0x0018700A, "DetectorID", "X/D", ""),
    (0x0018700C, "DateOfLastDetectorCalibration", "X/D", "M"),
    (0x0018700E, "TimeOfLastDetectorCalibration", "X/D", "M"),
    (0x00189074, "FrameAcquisitionDateTime", "D", "M"),
    (0x00189151, "FrameReferenceDateTime", "D", "M"),
    (0x00189185, "RespiratoryMotionCompensationTechniqueDescription", "X", "C"),
    (0x00189367, "XRaySourceID", "D", ""),
    (0x00189369, "SourceStartDateTime", "D", "M"),
    (0x0018936A, "SourceEndDateTime", "D", "M"),
    (0x00189371, "XRayDetectorID", "D", ""),
    (0x00189373, "XRayDetectorLabel", "X", ""),
    (0x0018937B, "MultienergyAcquisitionDescription", "X", "C"),
    (0x0018937F, "DecompositionDescription", "X", "C"),
    (0x00189424, "AcquisitionProtocolDescription", "X", "C"),
    (0x00189516, "StartAcquisitionDateTime", "X/D", "M"),
    (0x00189517, "EndAcquisitionDateTime", "X/D", "M"),
    (0x00189623, "FunctionalSyncPulse", "D", "M"),
    (0x00189701, "DecayCorrectionDateTime", "D", "M"),
    (0x00189804, "ExclusionStartDateTime", "D", "M"),
    (0x00189919, "InstructionPerformedDateTime", "Z/D", "M"),
    (0x00189937, "RequestedSeriesDescription", "X", "C"),
    (0x0018A002, "ContributionDateTime", "X", "M"),
    (0x0018A003, "ContributionDescription", "X", "C"),
    (0x0020000D, "StudyInstanceUID", "U", ""),
    (0x0020000E, "SeriesInstanceUID", "U", ""),
    (0x00200010, "StudyID", "Z", ""),
    (0x00200027, "PyramidLabel", "X", "C"),
    (0x00200052, "FrameOfReferenceUID", "U", ""),
    (0x00200200, "SynchronizationFrameOfReferenceUID", "U", ""),
    (0x00203401, "ModifyingDeviceID", "X", ""),
    (0x00203403, "ModifiedImageDate", "X", "M"),
    (0x00203405, "ModifiedImageTime", "X", "M"),
    (0x00203406, "ModifiedImageDescription", "X", ""),
    (0x00204000, "ImageComments", "X", "C"),
    (0x00209158, "FrameComments", "X", "C"),
    (0x00209161, "ConcatenationUID", "U", ""),
    (0x00209164, "DimensionOrganizationUID", "U", ""),
    (0x00281199, "PaletteColorLookupTableUID", "U", ""),
    (0x00281214, "LargePaletteColorLookupTableUID", "U", ""),
    (0x00284000, "ImagePresentationComments", "X", ""),
    (0x00320012, "StudyIDIssuer", "X", ""),
    (0x00320032, "StudyVerifiedDate", "X", "M"),
    (0x00320033, "StudyVerifiedTime", "X", "M"),
    (0x00320034, "StudyReadDate", "X", "M"),
    (0x00320035, "StudyReadTime", "X", "M"),
    (0x00321000, "ScheduledStudyStartDate", "X", "M"),
    (0x00321001, "ScheduledStudyStartTime", "X", "M"),
    (0x00321010, "ScheduledStudyStopDate", "X", "M"),
    (0x00321011, "ScheduledStudyStopTime", "X", "M"),
    (0x00321020, "ScheduledStudyLocation", "X", ""),
    (0x00321021, "ScheduledStudyLocationAETitle", "X", ""),
    (0x00321030, "ReasonForStudy", "X", "C"),
    (0x00321032, "RequestingPhysician", "X", ""),
    (0x00321033, "RequestingService", "X", ""),
    (0x00321040, "StudyArrivalDate", "X", "M"),
    (0x00321041, "StudyArrivalTime", "X", "M"),
    (0x00321050, "StudyCompletionDate", "X", "M"),
    (0x00321051, "StudyCompletionTime", "X", "M"),
    (0x00321060, "RequestedProcedureDescription", "X/Z", "C"),
    (0x00321066, "ReasonForVisit", "X", "C"),
    (0x00321067, "ReasonForVisitCodeSequence", "X", "C"),
    (0x00321070, "RequestedContrastAgent", "X", "C"),
    (0x00324000, "StudyComments", "X", "C"),
    (0x00340001, "FlowIdentifierSequence", "D", ""),
    (0x00340002, "FlowIdentifier", "D", ""),
    (0x00340005, "SourceIdentifier", "D", ""),
    (0x00340007, "FrameOriginTimestamp", "D", "M"),
    (0x00380004, "ReferencedPatientAliasSequence", "X", ""),
    (0x00380010, "AdmissionID", "X", ""),
    (0x00380011, "IssuerOfAdmissionID", "X", ""),
    (0x00380014, "IssuerOfAdmissionIDSequence", "X", ""),
    (0x0038001A, "ScheduledAdmissionDate", "X", "M"),
    (0x0038001B, "ScheduledAdmissionTime", "X", "M"),
    (0x0038001C, "ScheduledDischargeDate", "X", "M"),
    (0x0038001D, "ScheduledDischargeTime", "X", "M"),
    (0x0038001E, "ScheduledPatientInstitutionResidence", "X", ""),
    (0x00380020, "AdmittingDate", "X", "M"),
    (0x00380021, "AdmittingTime", "X", "M"),
    (0x00380030, "DischargeDate", "X", "M"),
    (0x00380032, "DischargeTime", "X", "M"),
    (0x00380040, "DischargeDiagnosisDescription", "X", "C"),
    (0x00380050, "SpecialNeeds", "X", "p"),
    (0x00380060, "ServiceEpisodeID", "X", ""),
    (0x00380061, "IssuerOfServiceEpisodeID", "X", ""),
    (0x00380062, "ServiceEpisodeDescription", "X", "C"),
    (0x00380064, "IssuerOfServiceEpisodeIDSequence", "X", ""),
    (0x00380300, "CurrentPatientLocation", "X", ""),
    (0x00380400, "PatientInstitutionResidence", "X", ""),
    (0x00380500, "PatientState", "X", "Cp"),
    (0x00384000, "VisitComments", "X", "C"),
    (0x003A0310, "MultiplexGroupUID", "U", ""),
    (0x003A0314, "ImpedanceMeasurementDateTime", "D", "M"),
    (0x003A0329, "WaveformFilterDescription", "X", "C"),
    (0x003A032B, "FilterLookupTableDescription", "X", "C"),
    (0x00400001, "ScheduledStationAETitle", "X", ""),
    (0x00400002, "ScheduledProcedureStepStartDate", "X", "M"),
    (0x00400003, "ScheduledProcedureStepStartTime", "X", "M"),
    (0x00400004, "ScheduledProcedureStepEndDate", "X", "M"),
    (0x00400005, "ScheduledProcedureStepEndTime", "X", "M"),
    (0x00400006, "ScheduledPerformingPhysicianName", "X", ""),
    (0x00400007, "ScheduledProcedureStepDescription", "X", "C"),
    (0x00400009, "ScheduledProcedureStepID", "X", ""),
    (0x0040000B, "ScheduledPerformingPhysicianIdentificationSequence", "X", ""),
    (0x00400010, "ScheduledStationName", "X", ""),
    (0x00400011, "ScheduledProcedureStepLocation", "X", ""),
    (0x00400012, "PreMedication", "X", "p"),
    (0x00400241, "PerformedStationAETitle", "X", ""),
    (0x00400242, "PerformedStationName", "X", ""),
    (0x00400243, "PerformedLocation", "X", ""),
    (0x00400244, "PerformedProcedureStepStartDate", "X", "M"),
    (0x00400245, "PerformedProcedureStepStartTime", "X", "M"),
    (0x00400250, "PerformedProcedureStepEndDate", "X", "M"),
    (0x00400251, "PerformedProcedureStepEndTime", "X", "M"),
    (0x00400253, "PerformedProcedureStepID", "X", ""),
    (0x00400254, "PerformedProcedureStepDescription", "X", "C"),
    (0x00400275, "RequestAttributesSequence", "X", "C"),
    (0x00400280, "CommentsOnThePerformedProcedureStep", "X", "C"),
    (0x00400310, "CommentsOnRadiationDose", "X", "C"),
    (0x0040050A, "SpecimenAccessionNumber", "X", ""),
    (0x00400512, "ContainerIdentifier", "D", ""),
    (0x00400513, "IssuerOfTheContainerIdentifierSequence", "Z", ""),
    (0x0040051A, "ContainerDescription", "X", "C"),
    (0x00400551, "SpecimenIdentifier", "D", ""),
    (0x00400554, "SpecimenUID", "U", ""),
    (0x00400555, "AcquisitionContextSequence", "X/Z", ""),
    (0x00400562, "IssuerOfTheSpecimenIdentifierSequence", "Z", ""),
    (0x00400600, "SpecimenShortDescription", "X", "C"),
    (0x00400602, "SpecimenDetailedDescription", "X", "C"),
    (0x00400610, "SpecimenPreparationSequence", "Z", ""),
    (0x004006FA, "SlideIdentifier", "X", ""),
    (0x00401001, "RequestedProcedureID", "X", ""),
    (0x00401002, "ReasonForTheRequestedProcedure", "X", "C"),
    (0x00401004, "PatientTransportArrangements", "X", ""),
    (0x00401005, "RequestedProcedureLocation", "X", ""),
    (0x0040100A, "ReasonForRequestedProcedureCodeSequence", "X", "C"),
    (0x00401010, "NamesOfIntendedRecipientsOfResults", "X", ""),
    (0x00401011, "IntendedRecipientsOfResultsIdentificationSequence", "X", ""),
    (0x00401101, "PersonIdentificationCodeSequence", "D", ""),
    (0x00401102, "PersonAddress", "X", ""),
    (0x00401103, "PersonTelephoneNumbers", "X", ""),
    (0x00401104, "PersonTelecomInformation", "X", ""),
    (0x00401400, "RequestedProcedureComments", "X", "C"),
    (0x00402001, "ReasonForTheImagingServiceRequest", "X", "C"),
    (0x00402004, "IssueDateOfImagingServiceRequest", "X", "M"),
    (0x00402005, "IssueTimeOfImagingServiceRequest", "X", "M"),
    (0x00402008, "OrderEnteredBy", "X", ""),
    (0x00402009, "OrderEntererLocation", "X", ""),
    (0x00402010, "OrderCallbackPhoneNumber", "X", ""),
    (0x00402011, "OrderCallbackTelecomInformation", "X", ""),
    (0x00402016, "PlacerOrderNumberImagingServiceRequest", "Z", ""),
    (0x00402017, "FillerOrderNumberImagingServiceRequest", "Z", ""),
    (0x00402400, "ImagingServiceRequestComments", "X", "C"),
    (0x00403001, "ConfidentialityConstraintOnPatientDataDescription", "X", ""),
    (0x00404005, "ScheduledProcedureStepStartDateTime", "X", "M"),
    (0x00404008, "ScheduledProcedureStepExpirationDateTime", "X", "M"),
    (0x00404010, "ScheduledProcedureStepModificationDateTime", "X", "M"),
    (0x00404011, "ExpectedCompletionDateTime", "X", "M"),
    (0x00404023, "ReferencedGeneralPurposeScheduledProcedureStepTransactionUID", "U", ""),
    (0x00404025, "ScheduledStationNameCodeSequence", "X", ""),
    (0x00404027, "ScheduledStationGeographicLocationCodeSequence", "X", ""),
    (0x00404028, "PerformedStationNameCodeSequence", "X", ""),
    (0x00404030, "PerformedStationGeographicLocationCodeSequence", "X", ""),
    (0x00404034, "ScheduledHumanPerformersSequence", "X", ""),
    (0x00404035, "ActualHumanPerformersSequence", "X", ""),
    (0x00404036, "HumanPerformerOrganization", "X", ""),
    (0x00404037, "HumanPerformerName", "X", ""),
    (0x00404050, "PerformedProcedureStepStartDateTime", "X", "M"),
    (0x00404051, "PerformedProcedureStepEndDateTime", "X", "M"),
    (0x00404052, "ProcedureStepCancellationDateTime", "X", "M"),
    (0x0040A023, "FindingsGroupRecordingDateTrial", "X", "M"),
    (0x0040A024, "FindingsGroupRecordingTimeTrial", "X", "M"),
    (0x0040A027, "VerifyingOrganization", "D", ""),
    (0x0040A030, "VerificationDateTime", "D", "M"),
    (0x0040A032, "ObservationDateTime", "X/D", "M"),
    (0x0040A033, "ObservationStartDateTime", "X", "M"),
    (0x0040A073, "VerifyingObserverSequence", "D", ""),
    (0x0040A075, "VerifyingObserverName", "D", ""),
    (0x0040A078, "AuthorObserverSequence", "X", ""),
    (0x0040A07A, "ParticipantSequence", "X", ""),
    (0x0040A07C, "CustodialOrganizationSequence", "X", ""),
    (0x0040A082, "ParticipationDateTime", "Z", "M"),
    (0x0040A088, "VerifyingObserverIdentificationCodeSequence", "Z", ""),
    (0x0040A110, "DateOfDocumentOrVerbalTransactionTrial", "X", "M"),
    (0x0040A112, "TimeOfDocumentCreationOrVerbalTransactionTrial", "X", "M"),
    (0x0040A120, "DateTime", "D", "M"),
    (0x0040A121, "Date", "D", "M"),
    (0x0040A122, "Time", "D", "M"),
    (0x0040A123, "PersonName", "D", ""),
    (0x0040A124, "UID", "U", ""),
    (0x0040A13A, "ReferencedDateTime", "D", "M"),
    (0x0040A171, "ObservationUID", "U", ""),
    (0x0040A172, "ReferencedObservationUIDTrial", "U", ""),
    (0x0040A192, "ObservationDateTrial", "X", "M"),
    (0x0040A193, "ObservationTimeTrial", "X", "M"),
    (0x0040A307, "CurrentObserverTrial", "X", ""),
    (0x0040A352, "VerbalSourceTrial", "X", ""),
    (0x0040A353, "AddressTrial", "X", ""),
    (0x0040A354, "TelephoneNumberTrial", "X", ""),
    (0x0040A358, "VerbalSourceIdentifierCodeSequenceTrial", "X", ""),
    (0x0040A402, "ObservationSubjectUIDTrial", "U", ""),
    (0x0040A730, "ContentSequence", "D", ""),
    (0x0040DB06, "TemplateVersion", "X", "M"),
    (0x0040DB07, "TemplateLocalVersion", "X", "M"),
    (0x0040DB0C, "TemplateExtensionOrganizationUID", "U", ""),
    (0x0040DB0D, "TemplateExtensionCreatorUID", "U", ""),
    (0x0040E004, "HL7DocumentEffectiveTime", "X", "M"),
    (0x00420011, "EncapsulatedDocument", "D", ""),
    (0x00440004, "ApprovalStatusDateTime", "X", "M"),
    (0x0044000B, "ProductExpirationDateTime", "X", "M"),
    (0x00440010, "SubstanceAdministrationDateTime", "X", "M"),
    (0x00440104, "AssertionDateTime", "D", "M"),
    (0x00440105, "AssertionExpirationDateTime", "X", "M"),
    (0x0050001B, "ContainerComponentID", "X", ""),
    (0x00500020, "DeviceDescription", "X", ""),
    (0x00500021, "LongDeviceDescription", "X", "C"),
    (0x00620021, "TrackingUID", "U", ""),
    (0x00640003, "SourceFrameOfReferenceUID", "U", ""),
    (0x00686226, "EffectiveDateTime", "D", "M"),
    (0x00686270, "InformationIssueDateTime", "D", "M"),
    (0x006A0003, "AnnotationGroupUID", "D", ""),
    (0x006A0005, "AnnotationGroupLabel", "D", "C"),
    (0x006A0006, "AnnotationGroupDescription", "X", "C"),
    (0x00700001, "GraphicAnnotationSequence", "D", ""),
    (0x00700082, "PresentationCreationDate", "X", "M"),
    (0x00700083, "PresentationCreationTime", "X", "M"),
    (0x00700084, "ContentCreatorName", "Z/D", ""),
    (0x00700086, "ContentCreatorIdentificationCodeSequence", "X", ""),
    (0x0070031A, "FiducialUID", "U", ""),
    (0x00701101, "PresentationDisplayCollectionUID", "U", ""),
    (0x00701102, "PresentationSequenceCollectionUID", "U", ""),
    (0x0072000A, "HangingProtocolCreationDateTime", "D", "M"),
    (0x0072005E, "SelectorAEValue", "D", ""),
    (0x0072005F, "SelectorASValue", "D", "P"),
    (0x00720061, "SelectorDAValue", "D", "M"),
    (0x00720063, "SelectorDTValue", "D", "M"),
    (0x00720065, "SelectorOBValue", "D", ""),
    (0x00720066, "SelectorLOValue", "D", "C"),
    (0x00720068, "SelectorLTValue", "D", "C"),
    (0x0072006A, "SelectorPNValue", "D", ""),
    (0x0072006B, "SelectorTMValue", "D", "M"),
    (0x0072006C, "SelectorSHValue", "D", "C"),
    (0x0072006D, "SelectorUNValue", "D", ""),
    (0x0072006E, "SelectorSTValue", "D", "C"),
    (0x00720070, "SelectorUTValue", "D", "C"),
    (0x00720071, "SelectorURValue", "D", ""),
    (0x00741234, "ReceivingAE", "X", ""),
    (0x00741236, "RequestingAE", "X", ""),
    (0x00880140, "StorageMediaFileSetUID", "U", ""),
    (0x00880200, "IconImageSequence", "X", ""),
    (0x00880904, "TopicTitle", "X", ""),
    (0x00880906, "TopicSubject", "X", ""),
    (0x00880910, "TopicAuthor", "X", ""),
    (0x00880912, "TopicKeywords", "X", ""),
    (0x01000420, "SOPAuthorizationDateTime", "X", "M"),
    (0x04000100, "DigitalSignatureUID", "U", ""),
    (0x04000105, "DigitalSignatureDateTime", "D", "M"),
    (0x04000115, "CertificateOfSigner", "D", ""),
    (0x04000310, "CertifiedTimestamp", "X", "M"),
    (0x04000402, "ReferencedDigitalSignatureSequence", "X", ""),
    (0x04000403, "ReferencedSOPInstanceMACSequence", "X", ""),
    (0x04000404, "MAC", "X", ""),
    (0x04000550, "ModifiedAttributesSequence", "X", ""),
    (0x04000551, "NonconformingModifiedAttributesSequence", "X", ""),
    (0x04000552, "NonconformingDataElementValue", "X", ""),
    (0x04000561, "OriginalAttributesSequence", "X", ""),
    (0x04000562, "AttributeModificationDateTime", "D", "M"),
    (0x04000563, "ModifyingSystem", "D", ""),
    (0x04000564, "SourceOfPreviousValues", "Z", ""),
    (0x04000565, "ReasonForTheAttributeModification", "D", "C"),
    (0x04000600, "InstanceOriginStatus", "X", ""),
    (0x20300020, "TextString", "X", ""),
    (0x21000040, "CreationDate", "X", "M"),
    (0x21000050, "CreationTime", "X", "M"),
    (0x21000070, "Originator", "X", ""),
    (0x21000140, "DestinationAE", "D", ""),
    (0x22000002, "LabelText", "X/Z", "C"),
    (0x22000005, "BarcodeValue", "X/Z", ""),
    (0x30020121, "PositionAcquisitionTemplateName", "X", "C"),
    (0x30020123, "PositionAcquisitionTemplateDescription", "X", "C"),
    (0x30060002, "StructureSetLabel", "D", "C"),
    (0x30060004, "StructureSetName", "X", "C"),
    (0x30060006, "StructureSetDescription", "X", "C"),
    (0x30060008, "StructureSetDate", "Z", "M"),
    (0x30060009, "StructureSetTime", "Z", "M"),
    (0x30060024, "ReferencedFrameOfReferenceUID", "U", ""),
    (0x30060026, "ROIName", "Z", "C"),
    (0x30060028, "ROIDescription", "X", "C"),
    (0x3006002D, "ROIDateTime", "X", "M"),
    (0x3006002E, "ROIObservationDateTime", "X", "M"),
    (0x30060038, "ROIGenerationDescription", "X", "C"),
    (0x3006004D, "ROICreatorSequence", "X", ""),
    (0x3006004E, "ROIInterpreterSequence", "X", ""),
    (0x30060085, "ROIObservationLabel", "X", "C"),
    (0x30060088, "ROIObservationDescription", "X", "C"),
    (0x300600A6, "ROIInterpreter", "Z", ""),
    (0x300600C2, "RelatedFrameOfReferenceUID", "U", ""),
    (0x30080024, "TreatmentControlPointDate", "D", "M"),
    (0x30080025, "TreatmentControlPointTime", "D", "M"),
    (0x30080054, "FirstTreatmentDate", "X/D", "M"),
    (0x30080056, "MostRecentTreatmentDate", "X/D", "M"),
    (0x30080105, "SourceSerialNumber", "X/Z", ""),
    (0x30080162, "SafePositionExitDate", "D", "M"),
    (0x30080164, "SafePositionExitTime", "D", "M"),
    (0x30080166, "SafePositionReturnDate", "D", "M"),
    (0x30080168, "SafePositionReturnTime", "D", "M"),
    (0x30080250, "TreatmentDate", "X/D", "M"),
    (0x30080251, "TreatmentTime", "X/D", "M"),
    (0x300A0002, "RTPlanLabel", "D", "C"),
    (0x300A0003, "RTPlanName", "X", "C"),
    (0x300A0004, "RTPlanDescription", "X", "C"),
    (0x300A0006, "RTPlanDate", "X/D", "M"),
    (0x300A0007, "RTPlanTime", "X/D", "M"),
    (0x300A000B, "TreatmentSites", "X", "C"),
    (0x300A000E, "PrescriptionDescription", "X", "C"),
    (0x300A0013, "DoseReferenceUID", "U", ""),
    (0x300A0016, "DoseReferenceDescription", "X", "C"),
    (0x300A0072, "FractionGroupDescription", "X", "C"),
    (0x300A0083, "ReferencedDoseReferenceUID", "U", ""),
    (0x300A00B2, "TreatmentMachineName", "X/Z", ""),
    (0x300A00C3, "BeamDescription", "X", "C"),
    (0x300A00DD, "BolusDescription", "X", "C"),
    (0x300A0196, "FixationDeviceDescription", "X", "C"),
    (0x300A01A6, "ShieldingDeviceDescription", "X", "C"),
    (0x300A01B2, "SetupTechniqueDescription", "X", "C"),
    (0x300A0216, "SourceManufacturer", "X", ""),
    (0x300A022C, "SourceStrengthReferenceDate", "D", "M"),
    (0x300A022E, "SourceStrengthReferenceTime", "D", "M"),
    (0x300A02EB, "CompensatorDescription", "X", "C"),
    (0x300A0608, "TreatmentPositionGroupLabel", "D", "C"),
    (0x300A0609, "TreatmentPositionGroupUID", "U", ""),
    (0x300A0611, "RTAccessoryHolderSlotID", "Z", ""),
    (0x300A0615, "RTAccessoryDeviceSlotID", "Z", ""),
    (0x300A0619, "RadiationDoseIdentificationLabel", "D", "C"),
    (0x300A0623, "RadiationDoseInVivoMeasurementLabel", "D", "C"),
    (0x300A062A, "RTToleranceSetLabel", "D", "C"),
    (0x300A0650, "PatientSetupUID", "U", ""),
    (0x300A0676, "EquipmentFrameOfReferenceDescription", "X", "C"),
    (0x300A067C, "RadiationGenerationModeLabel", "D", "C"),
    (0x300A067D, "RadiationGenerationModeDescription", "Z", "C"),
    (0x300A0700, "TreatmentSessionUID", "U", ""),
    (0x300A0734, "TreatmentToleranceViolationDescription", "D", "C"),
    (0x300A0736, "TreatmentToleranceViolationDateTime", "D", "M"),
    (0x300A073A, "RecordedRTControlPointDateTime", "D", "M"),
    (0x300A0741, "InterlockDateTime", "D", "M"),
    (0x300A0742, "InterlockDescription", "D", "C"),
    (0x300A0760, "OverrideDateTime", "D", "M"),
    (0x300A0783, "InterlockOriginDescription", "D", "C"),
    (0x300A0785, "ReferencedTreatmentPositionGroupUID", "U", ""),
    (0x300A078E, "PatientTreatmentPreparationProcedureParameterDescription", "X", "C"),
    (0x300A0792, "PatientTreatmentPreparationMethodDescription", "X", "C"),
    (0x300A0794, "PatientSetupPhotoDescription", "X", "C"),
    (0x300A079A, "DisplacementReferenceLabel", "X", "C"),
    (0x300C0113, "ReasonForOmissionDescription", "X", "C"),
    (0x300C0127, "BeamHoldTransitionDateTime", "D", "M"),
    (0x300E0004, "ReviewDate", "Z", "M"),
    (0x300E0005, "ReviewTime", "Z", "M"),
    (0x300E0008, "ReviewerName", "X/Z", ""),
    (0x30100006, "ConceptualVolumeUID", "U", ""),
    (0x3010000B, "ReferencedConceptualVolumeUID", "U", ""),
    (0x3010000F, "ConceptualVolumeCombinationDescription", "Z", "C"),
    (0x30100013, "ConstituentConceptualVolumeUID", "U", ""),
    (0x30100015, "SourceConceptualVolumeUID", "U", ""),
    (0x30100017, "ConceptualVolumeDescription", "Z", "C"),
    (0x3010001B, "DeviceAlternateIdentifier", "Z", ""),
    (0x3010002D, "DeviceLabel", "D", ""),
    (0x30100031, "ReferencedFiducialsUID", "U", ""),
    (0x30100033, "UserContentLabel", "D", "C"),
    (0x30100034, "UserContentLongLabel", "D", "C"),
    (0x30100035, "EntityLabel", "D", "C"),
    (0x30100036, "EntityName", "X", "C"),
    (0x30100037, "EntityDescription", "X", "C"),
    (0x30100038, "EntityLongLabel", "D", "C"),
    (0x3010003B, "RTTreatmentPhaseUID", "U", ""),
    (0x30100043, "ManufacturerDeviceIdentifier", "Z", ""),
    (0x3010004C, "IntendedPhaseStartDate", "X/D", "M"),
    (0x3010004D, "IntendedPhaseEndDate", "X/D", "M"),
    (0x30100054, "RTPrescriptionLabel", "D", "C"),
    (0x30100056, "RTTreatmentApproachLabel", "X/D", "C"),
    (0x3010005A, "RTPhysicianIntentNarrative", "Z", "C"),
    (0x3010005C, "ReasonForSuperseding", "Z", "C"),
    (0x30100061, "PriorTreatmentDoseDescription", "X", "C"),
    (0x3010006E, "DosimetricObjectiveUID", "U", ""),
    (0x3010006F, "ReferencedDosimetricObjectiveUID", "U", ""),
    (0x30100077, "TreatmentSite", "X/D", "C"),
    (0x3010007A, "TreatmentTechniqueNotes", "Z", "C"),
    (0x3010007B, "PrescriptionNotes", "Z", "C"),
    (0x3010007F, "FractionationNotes", "Z", "C"),
    (0x30100081, "PrescriptionNotesSequence", "Z", "C"),
    (0x30100085, "IntendedFractionStartTime", "X", "M"),
    (0x40000010, "Arbitrary", "X", ""),
    (0x40004000, "TextComments", "X", ""),
    (0x40080040, "ResultsID", "X", ""),
    (0x40080042, "ResultsIDIssuer", "X", ""),
    (0x40080100, "InterpretationRecordedDate", "X", "M"),
    (0x40080101, "InterpretationRecordedTime", "X", "M"),
    (0x40080102, "InterpretationRecorder", "X", ""),
    (0x40080108, "InterpretationTranscriptionDate", "X", "M"),
    (0x40080109, "InterpretationTranscriptionTime", "X", "M"),
    (0x4008010A, "InterpretationTranscriber", "X", ""),
    (0x4008010B, "InterpretationText", "X", "C"),
    (0x4008010C, "InterpretationAuthor", "X", ""),
    (0x40080111, "InterpretationApproverSequence", "X", ""),
    (0x40080112, "InterpretationApprovalDate", "X", "M"),
    (0x40080113, "InterpretationApprovalTime", "X", "M"),
    (0x40080114, "PhysicianApprovingInterpretation", "X", ""),
    (0x40080115, "InterpretationDiagnosisDescription", "X", "C"),
    (0x40080118, "ResultsDistributionListSequence", "X", ""),
    (0x40080119, "DistributionName", "X", ""),
    (0x4008011A, "DistributionAddress", "X", ""),
    (0x40080200, "InterpretationID", "X", ""),
    (0x40080202, "InterpretationIDIssuer", "X", ""),
    (0x40080300, "Impressions", "X", "C"),
    (0x40084000, "ResultsComments", "X", "C"),
    (0xFFFAFFFA, "DigitalSignaturesSequence", "X", ""),
    (0xFFFCFFFC, "DataSetTrailingPadding", "X", ""),
)

#: Table E.1-1 by tag (the rows with a fixed tag).
BASIC_PROFILE: Mapping[int, ProfileRow] = MappingProxyType(
    {row[0]: ProfileRow(*row) for row in _ROWS}
)
#: Keyword -> tag, for the rows above.
KEYWORDS: Mapping[str, int] = MappingProxyType({row[1]: row[0] for row in _ROWS})

# Rows with a repeating group (50xx: curves, retired; 60xx: overlays).  The gateway
# removes the whole repeating group: overlay rows, columns and origin are useless
# once the Overlay Data the table removes is gone.
CURVE_DATA = ProfileRow(0x50000000, "CurveData", "X", "")
OVERLAY_DATA = ProfileRow(0x60003000, "OverlayData", "X", "")
OVERLAY_COMMENTS = ProfileRow(0x60004000, "OverlayComments", "X", "")
#: Private attributes (gggg,eeee) with gggg odd: X (the safe-private option is not used).
PRIVATE_ATTRIBUTES = ProfileRow(0x00090000, "PrivateAttributes", "X", "")

#: Number of attribute rows covered: the fixed tags plus the four pattern rows.
ROW_COUNT = len(BASIC_PROFILE) + 4


def is_repeating_group(tag: int) -> bool:
    """Curve (50xx) and overlay (60xx) groups, even groups 0x5000-0x501E / 0x6000-0x601E."""
    group = tag >> 16
    return group % 2 == 0 and (0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E)


def lookup(tag: int) -> ProfileRow | None:
    """The Table E.1-1 row for `tag`, or None when the table does not list it."""
    row = BASIC_PROFILE.get(tag)
    if row is not None:
        return row
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 1:
        return PRIVATE_ATTRIBUTES
    if is_repeating_group(tag):
        if group <= 0x501E:
            return CURVE_DATA
        if element == 0x3000:
            return OVERLAY_DATA
        if element == 0x4000:
            return OVERLAY_COMMENTS
    return None


def resolve_action(row: ProfileRow, options: Options) -> str:
    """The single action (one of :data:`RESOLVED_ACTIONS`) for `row` under `options`.

    Options first, in the order of PS3.15 E.3: an option that says ``K`` or ``C``
    overrides the basic profile.  The ``C`` of the Retain Patient Characteristics
    Option (free text such as Allergies) is not applied: such rows keep their basic
    action.  Then compound codes resolve as the module docstring says.
    """
    flags = row.flags
    if options.patient_characteristics and FLAG_PATIENT_CHARACTERISTICS_KEEP in flags:
        return "K"
    if options.modified_dates and FLAG_MODIFIED_DATES in flags:
        return "C"
    if options.clean_descriptors and FLAG_CLEAN_DESCRIPTORS in flags:
        return "C"
    return resolve_basic(row.basic)


def resolve_basic(code: str) -> str:
    """Resolve a basic-profile code, compound codes included, to a single action."""
    if code not in ACTIONS:
        raise ValueError(f"unknown Annex E action code {code!r}")
    if code in RESOLVED_ACTIONS:
        return code
    if code == "X/Z/U*":
        return "U"
    if "Z" in code:
        return "Z"
    return "X"  # X/D


# ---------------------------------------------------------------------------
# Other facts of the standard the de-identifier keeps values by

#: Defined terms and enumerated values of PS3.3 that a code string (CS) holds whatever
#: the patient.  They stay even when a name or an ID of the record is the same word (a
#: name part "Mr" and Modality MR; a test patient called "Perfusion"): a word of the
#: standard says nothing about anyone, and emptying Modality, PhotometricInterpretation
#: or an SR ValueType breaks the object.
CODE_STRING_VOCABULARY = frozenset(
    {
        # Modality (C.7.3.1.1.1), retired ones included
        "AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CD", "CF", "CFM", "CP", "CR", "CS", "CT",
        "CTPROTOCOL", "DD", "DF", "DG", "DM", "DMS", "DOC", "DS", "DX", "EC", "ECG", "EEG",
        "EMG", "EOG", "EPS", "ES", "FA", "FID", "FS", "GM", "HC", "HD", "IO", "IOL",
        "IVOCT", "IVUS", "KER", "KO", "LEN", "LP", "LS", "M3D", "MA", "MG", "MR", "MS",
        "NM", "OAM", "OCT", "OP", "OPM", "OPR", "OPT", "OPTBSV", "OPTENF", "OPV", "OSS",
        "OT", "PA", "PLAN", "POS", "PR", "PT", "PX", "REG", "RESP", "RF", "RG", "RTDOSE",
        "RTIMAGE", "RTINTENT", "RTPLAN", "RTRAD", "RTRECORD", "RTSEGANN", "RTSTRUCT",
        "RWV", "SEG", "SM", "SMR", "SR", "SRF", "ST", "STAIN", "TEXTUREMAP", "TG", "US",
        "VA", "VF", "XA", "XAPROTOCOL", "XC",
        # Image Type and Frame Type values
        "ORIGINAL", "DERIVED", "PRIMARY", "SECONDARY", "AXIAL", "LOCALIZER", "SCOUT",
        "REFORMATTED", "MPR", "MIP", "MINIP", "MAX_IP", "MIN_IP", "CURVED_MPR",
        "VOLUME_RENDER", "SURFACE_RENDER", "PROJECTION IMAGE", "VOLUME", "SAMPLED",
        "DISTORTED", "MIXED", "NONE", "OTHER", "PERFUSION", "DIFFUSION", "ADC", "TRACEW",
        "MOSAIC", "DIXON", "WATER", "FAT", "IN_PHASE", "OUT_PHASE", "MAGNITUDE", "PHASE",
        "REAL", "IMAGINARY", "ANGIO", "CINE", "DYNAMIC", "STATIC", "GATED", "WHOLE BODY",
        "TOMO", "RECON TOMO", "EMISSION", "TRANSMISSION", "SUBTRACTION", "RCBF", "RCBV",
        "MTT", "TTP", "DRR", "PORTAL", "SIMULATOR", "FLUENCE", "LABEL", "OVERVIEW",
        "THUMBNAIL", "ATTENUATION", "DOSE", "STATIONARY", "CALIBRATION",
        # Photometric Interpretation, Lossy Image Compression Method, Pixel Presentation
        "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "ARGB", "CMYK", "HSV",
        "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT",
        "YBR_RCT", "XYB", "ISO_10918_1", "ISO_14495_1", "ISO_15444_1", "ISO_15444_15",
        "ISO_13818_2", "ISO_14496_10", "ISO_23008_2", "ISO_18181_1", "MONOCHROME", "COLOR",
        "TRUE_COLOR",
        # Structured reports: value types, relationships, continuity, flags, graphics
        "TEXT", "NUM", "CODE", "DATETIME", "DATE", "TIME", "UIDREF", "PNAME", "COMPOSITE",
        "IMAGE", "WAVEFORM", "SCOORD", "SCOORD3D", "TCOORD", "CONTAINER", "TABLE",
        "CONTAINS", "HAS PROPERTIES", "HAS OBS CONTEXT", "HAS ACQ CONTEXT", "INFERRED FROM",
        "SELECTED FROM", "HAS CONCEPT MOD", "SEPARATE", "CONTINUOUS", "PARTIAL",
        "COMPLETE", "UNVERIFIED", "VERIFIED", "POINT", "MULTIPOINT", "POLYLINE", "CIRCLE",
        "ELLIPSE", "POLYGON", "ELLIPSOID", "SEGMENT", "MULTISEGMENT",
        # Patient Position; presentation intent; conversion type; rescale type; LUTs
        "HFP", "HFS", "HFDR", "HFDL", "FFP", "FFS", "FFDR", "FFDL", "LFP", "LFS", "RFP",
        "RFS", "AFDR", "AFDL", "PFDR", "PFDL", "FOR PRESENTATION", "FOR PROCESSING",
        "DV", "DI", "WSD", "SD", "SI", "DRW", "SYN", "HU", "OD", "MGML", "IDENTITY",
        "INVERSE", "LINEAR", "LINEAR_EXACT", "SIGMOID",
        # flags
        "YES", "NO", "UNKNOWN", "ON", "OFF", "TRUE", "FALSE", "MALE", "FEMALE",
    }
)


#: Coding scheme designators of PS3.16 Table 8-1 beyond those of pydicom's concept
#: dictionary (whose codes the de-identifier keeps whole).  A standard scheme's
#: designator is kept, and its code values may be long numbers (CPT, SNOMED); a local
#: scheme's code value with five digits is an ID.
MORE_CODING_SCHEMES = frozenset(
    {"ACR", "ASTM-sigpurpose", "BI", "C4", "C5", "CD2", "DC", "DCMUID", "HPC", "I10C",
     "I10P", "I9", "I9C", "ISO3166_1", "ISO639_1", "ISO639_2", "ISO639_3", "MA", "MDNS",
     "MGI", "NCDR", "NICIP", "NYUMCCG", "PATHLEX", "POS", "RADELEMENT", "RFC3066",
     "RFC5646", "RO", "RRID", "SCPECG", "SNM3", "SRT", "UBERON", "UNS", "UPC", "99SDM"}
)


#: UIDs outside pydicom's UID dictionary that name a class or a coding scheme, never
#: an instance: kept as they are.  Everything else not in the dictionary is remapped.
DOCUMENTED_UIDS: Mapping[str, str] = MappingProxyType(
    {
        # Private SOP classes
        "1.3.12.2.1107.5.9.1": "Siemens CSA Non-Image Storage",
        # Coding schemes, PS3.16 Table 8-1 (the DICOM-rooted ones are in the dictionary)
        "2.16.840.1.113883.6.96": "SNOMED CT (SCT, SRT)",
        "2.16.840.1.113883.6.1": "LOINC (LN)",
        "2.16.840.1.113883.6.8": "UCUM",
        "2.16.840.1.113883.6.256": "RadLex (RADLEX)",
        "2.16.840.1.113883.6.119": "FMA",
        "2.16.840.1.113883.6.3": "ICD-10 (I10)",
        "2.16.840.1.113883.6.4": "ICD-10-PCS (I10P)",
        "2.16.840.1.113883.6.90": "ICD-10-CM (I10C)",
        "2.16.840.1.113883.3.26.1.1": "NCI Thesaurus (NCIt)",
        "2.16.840.1.113883.6.86": "UMLS",
        "2.16.840.1.113883.6.76": "ACR Index (ACR)",
        "2.16.840.1.113883.6.88": "RxNorm (RXNORM)",
        "2.16.840.1.113883.6.177": "MeSH (MSH)",
        "2.16.840.1.113883.6.69": "NDC",
        "2.16.840.1.113883.6.210": "NeuroNames (NEU)",
        "2.16.840.1.113883.6.51": "SNOMED V3 (SNM3)",
        # Private coding scheme of DCMTK, in its structured reports
        "1.2.276.0.7230010.3.0.0.1": "99_OFFIS_DCMTK",
    }
)
